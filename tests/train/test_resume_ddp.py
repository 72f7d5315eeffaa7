"""Resume over 2 DDP ranks (gloo, CPU) × 2 DataLoader workers: killed at a step, resumed, the
same final weights on every rank as an uninterrupted 2-rank run."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.train.classify import TrainConfig, train_classifier
from pipeline.train.data import InputSpec

pytestmark = pytest.mark.slow  # three 2-process runs: about 75 s here


class Killed(Exception):
    pass


def _rank(rank: int, world: int, init: str, cfg: TrainConfig, kill_step: int, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    steps = []

    def step(epoch, batch, batches, loss):
        steps.append(loss)
        if kill_step and len(steps) == kill_step:
            raise Killed

    try:
        r = train_classifier(cfg, log=lambda rec: None, rank=rank, on_batch=step,
                             wrap_model=lambda m: torch.nn.parallel.DistributedDataParallel(m))
        torch.save({"state": r["model"].state_dict(), "losses": steps}, f"{result}.{rank}")
    except Killed:
        torch.save({"killed": True, "losses": steps}, f"{result}.{rank}")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, name: str, cfg: TrainConfig, kill_step: int = 0) -> list[dict]:
    init = f"file://{tmp_path}/{name}.init"
    result = str(tmp_path / name)
    mp.spawn(_rank, args=(2, init, cfg, kill_step, result), nprocs=2, join=True)
    return [torch.load(f"{result}.{r}", weights_only=False) for r in range(2)]


def test_two_ranks_two_workers_killed_and_resumed(latents, tmp_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    base = TrainConfig(InputSpec(str(latents), window=(4, 4), batch_size=2, workers=2), arch="sresnet18",
                       epochs=2, lr=0.02, val_split="train", out=str(tmp_path / "ref"))
    ref = _spawn(tmp_path, "ref", base)
    run = dataclasses.replace(base, out=str(tmp_path / "run"), checkpoint_every=1)
    killed = _spawn(tmp_path, "killed", run, kill_step=4)  # epoch 1, its first batch
    assert all(k.get("killed") for k in killed)
    resumed = _spawn(tmp_path, "resumed", dataclasses.replace(run, resume=True))
    for r in range(2):
        assert resumed[r]["losses"] == ref[r]["losses"][4:]  # rank r's samples, in order, from step 5
        for k, v in ref[r]["state"].items():
            assert torch.equal(v, resumed[r]["state"][k]), (r, k)
