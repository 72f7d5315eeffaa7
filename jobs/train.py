"""`latents train classify`: the training loop locally, or on Ray Train workers with DDP."""

from __future__ import annotations

import os
from collections.abc import Callable

from pipeline.train.loop import TrainConfig, train_classifier


def run_local(cfg: TrainConfig, log: Callable[[dict], None], show_progress: bool = True) -> dict:
    """The loop in this process, with a live rich bar over each epoch's batches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  disable=not show_progress, transient=True) as bar:
        task = bar.add_task("train", total=None, epoch=0, loss=0.0)

        def step(epoch: int, batch: int, batches: int, loss: float) -> None:
            bar.update(task, completed=batch, total=batches, epoch=epoch, loss=loss)

        return train_classifier(cfg, log, on_batch=step)


def _worker_loop(config: dict) -> None:
    """Runs in each Ray Train worker: DDP is set up by Ray (gloo on CPU, nccl on GPU)."""
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    cfg: TrainConfig = config["cfg"]
    rank = dist.get_rank()
    result = train_classifier(cfg, log=lambda rec: ray.train.report(rec), wrap_model=prepare_model, rank=rank)
    if config.get("trace_dir"):  # what each rank saw in epoch 0, for tests and debugging
        import dataclasses
        import hashlib
        import json

        from pipeline.loader import LatentShardDataset
        from pipeline.train.data import make_loader

        ds, _, _, _ = make_loader(cfg.input, cfg.train_split, True)
        # this rank's share, whole grids (a crop of an integer ŷ is too often all zeros to name a sample)
        whole = LatentShardDataset(dataclasses.replace(ds.cfg, window=None))
        whole.set_epoch(0)
        seen = [[hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16], int(t)] for v, t in whole]
        with open(os.path.join(config["trace_dir"], f"rank{rank}.json"), "w") as f:
            json.dump({"rank": rank, "world": dist.get_world_size(), "samples": seen,
                       "batches_per_epoch": result["batches_per_epoch"]}, f)


def run_ray(cfg: TrainConfig, workers: int, use_gpu: bool, address: str | None = None,
            trace_dir: str | None = None):
    """Ray Train `TorchTrainer` with ``workers`` DDP workers; returns Ray's Result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.ray_session import connect

    connect(address)
    storage = os.path.abspath(cfg.out or "runs/ray-train")
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"cfg": cfg, "trace_dir": trace_dir},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=storage, name="classify"))
    return trainer.fit()
