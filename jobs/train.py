"""`latents train classify` and `latents train-codec`: the loops locally, or on Ray Train
workers (DDP for the classifier, averaged gradients for the codec)."""

from __future__ import annotations

import dataclasses
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
    # workers run in their own folders: every path they open must be absolute
    cfg = dataclasses.replace(cfg, out=_absolute(cfg.out),
                              input=dataclasses.replace(cfg.input, data=_absolute(cfg.input.data),
                                                        cache=_absolute(cfg.input.cache)))
    storage = os.path.abspath(cfg.out or "runs/ray-train")
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"cfg": cfg, "trace_dir": trace_dir},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=storage, name="classify"))
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


def _detect_worker(config: dict) -> None:
    """Runs in each Ray Train worker: DDP (unused parameters allowed: an RoI head may see no
    box of a class in a step); rank 0 evaluates and saves."""
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    from pipeline.train.detect import train_detection

    def wrap(m):
        return prepare_model(m, parallel_strategy_kwargs={"find_unused_parameters": True})

    train_detection(config["cfg"], log=lambda rec: ray.train.report(rec), wrap_model=wrap,
                    rank=dist.get_rank())


def run_detect_ray(cfg, workers: int, use_gpu: bool, address: str | None = None):
    """`train_detection` (detect or segment) on ``workers`` Ray Train DDP workers."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.ray_session import connect

    connect(address)
    cfg = dataclasses.replace(cfg, data=_absolute(cfg.data), out=_absolute(cfg.out),
                              cache=_absolute(cfg.cache))
    trainer = TorchTrainer(
        _detect_worker, train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=os.path.abspath(cfg.out or "runs/ray-train"), name=cfg.task))
    return trainer.fit()


def _absolute(path: str | None) -> str | None:
    """A local path made absolute (workers run elsewhere); URLs and bundled:NAME as they are."""
    return path if path is None or "://" in path or path.startswith("bundled:") else os.path.abspath(path)
