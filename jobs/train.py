"""`latents train classify | detect | segment` and `latents train-codec`: the library's loops
locally, or on Ray Train workers (DDP for the task models, averaged gradients for the codec)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from pipeline.train.classify import TrainConfig
from pipeline.train.detect import DetectConfig

TaskConfig = TrainConfig | DetectConfig


def task_for(cfg: TaskConfig, **kwargs):
    """The engine task a config describes: classification, or detection / segmentation."""
    if isinstance(cfg, TrainConfig):
        from pipeline.train.classify import ClassifyTask

        return ClassifyTask(cfg, **kwargs)
    from pipeline.train.detect import DetectTask

    return DetectTask(cfg, **kwargs)


def run_local(cfg: TaskConfig, log: Callable[[dict], None], show_progress: bool = True):
    """The engine in this process, with a live rich bar over each epoch's batches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.train.engine import fit

    with Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  disable=not show_progress, transient=True) as bar:
        task = bar.add_task("train", total=None, epoch=0, loss=0.0)

        def step(epoch: int, batch: int, batches: int, loss: float) -> None:
            bar.update(task, completed=batch, total=batches, epoch=epoch, loss=loss)

        return fit(task_for(cfg), log, on_batch=step)


def _worker_loop(config: dict) -> None:
    """Runs in each Ray Train worker: DDP is set up by Ray (gloo on CPU, nccl on GPU); rank 0
    writes. Detection allows unused parameters (an RoI head may see no box of a class in a step)."""
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    from pipeline.train.engine import fit

    cfg: TaskConfig = config["cfg"]
    rank = dist.get_rank()
    task = task_for(cfg)
    ddp = {} if isinstance(cfg, TrainConfig) else {"find_unused_parameters": True}

    def report(rec: dict) -> None:
        if "resumed" not in rec:  # every rank reports each epoch (the report is collective)
            ray.train.report(rec)

    result = fit(task, report, wrap_model=lambda m: prepare_model(m, parallel_strategy_kwargs=ddp), rank=rank)
    if config.get("trace_dir"):
        _trace(task, rank, dist.get_world_size(), result.batches_per_epoch, config["trace_dir"])


def _trace(task, rank: int, world: int, batches_per_epoch: list[int], trace_dir: str) -> None:
    """What a classification rank saw in epoch 0, for tests and debugging: its share as whole
    grids (a crop of an integer ŷ is too often all zeros to name a sample)."""
    import hashlib
    import json

    from pipeline.loader import LatentShardDataset

    whole = LatentShardDataset(dataclasses.replace(task.train.dataset.cfg, window=None))
    whole.set_epoch(0)
    seen = [[hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16], int(t)] for v, t in whole]
    with open(os.path.join(trace_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world": world, "samples": seen, "batches_per_epoch": batches_per_epoch}, f)


def run_ray(cfg: TaskConfig, workers: int, use_gpu: bool, address: str | None = None,
            trace_dir: str | None = None):
    """Ray Train `TorchTrainer` with ``workers`` DDP workers running any task; returns Ray's Result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.ray_session import connect

    connect(address)
    # workers run in their own folders: every path they open must be absolute
    if isinstance(cfg, TrainConfig):
        cfg = dataclasses.replace(cfg, out=_absolute(cfg.out),
                                  input=dataclasses.replace(cfg.input, data=_absolute(cfg.input.data),
                                                            cache=_absolute(cfg.input.cache)))
        name = "classify"
    else:
        cfg = dataclasses.replace(cfg, data=_absolute(cfg.data), out=_absolute(cfg.out),
                                  cache=_absolute(cfg.cache))
        name = cfg.task
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"cfg": cfg, "trace_dir": trace_dir},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=os.path.abspath(cfg.out or "runs/ray-train"), name=name))
    return trainer.fit()


def _codec_worker(config: dict) -> None:
    """Runs in each Ray Train worker: the process group is Ray's (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist
    from ray.train.torch import get_device

    from pipeline.codec_train.train import train_codec

    train_codec(config["cfg"], on_log=print, rank=dist.get_rank(), world=dist.get_world_size(),
                device=get_device())


def run_codec_ray(cfg, workers: int, gpus_per_worker: float = 0.0, address: str | None = None):
    """`train_codec` on ``workers`` Ray Train workers; rank 0 writes the checkpoint (CDF tables
    built once, there). ``cfg.out`` must be on storage every worker's node sees."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.ray_session import connect

    connect(address)
    cfg = dataclasses.replace(cfg, out=os.path.abspath(cfg.out), source=_absolute(cfg.source),
                              task_source=_absolute(cfg.task_source), init_from=_absolute(cfg.init_from))
    resources = {"CPU": 1, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    trainer = TorchTrainer(
        _codec_worker, train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(storage_path=os.path.abspath(os.path.dirname(cfg.out) or "."),
                             name="ray-train-codec"))
    return trainer.fit()


def _absolute(path: str | None) -> str | None:
    """A local path made absolute (workers run elsewhere); URLs and bundled:NAME as they are."""
    return path if path is None or "://" in path or path.startswith("bundled:") else os.path.abspath(path)
