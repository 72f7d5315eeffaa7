"""The Ray executor of `pipeline.convert`: a pool of actors, each holding one codec for its life.

Each actor loads the dataset's own codec checkpoint from ``OUT/codec/`` (so every worker
encodes with exactly the bytes the manifest names) and converts whole shards end to end.
A killed actor is restarted by Ray and its shard retried; shards are written atomically,
so a retried shard is never half-present.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import ray
import torch

from jobs import ray_session
from pipeline.codec import checkpoint
from pipeline.codec.load import codec_from_checkpoint
from pipeline.convert import (
    ConvertObserver,
    ConvertOptions,
    ExecutorRun,
    Progress,
    ShardResult,
    ShardTask,
    ShardWork,
    convert_shard,
)
from pipeline.errors import ConfigError, FingerprintMismatch, LatentShardsError
from pipeline.shards.layout import Layout
from pipeline.shards.lease import LeaseLost


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: embedded local Ray; "auto" or "ray://host:10001"
    workers: int | None = None  # None: as many as the cluster's CPUs (or GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_task_retries: int = 3

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}; leave it out for as "
                              "many workers as the cluster can place")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ConfigError(f"--cpus-per-worker must be positive and --gpus-per-worker not negative, "
                              f"got {self.cpus_per_worker} and {self.gpus_per_worker}")


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest cumulative progress per shard; a retried shard simply starts again from zero."""

    def __init__(self):
        self.shards: dict[str, Progress] = {}

    def report(self, shard: str, progress: Progress):
        self.shards[shard] = progress

    def totals(self) -> Progress:
        return sum(self.shards.values(), Progress())


class ShardWorker:
    def __init__(self, out: str, fingerprint: str, options: ConvertOptions, threads: int,
                 use_gpu: bool, lease_id: str = ""):
        torch.set_num_threads(max(1, threads))
        self.layout = Layout.at(out)
        self.options = options
        self.lease_id = lease_id
        ck = checkpoint.read(self.layout.codec_checkpoint)
        self.codec = codec_from_checkpoint(ck, f"dataset:{out}")
        if self.codec.identity.fingerprint != fingerprint:
            raise FingerprintMismatch(fingerprint, self.codec.identity.fingerprint, "worker codec")
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.codec.to(self.device)

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": self.device, "node": ray.get_runtime_context().get_node_id()}

    def convert(self, task: ShardTask, board) -> ShardResult:
        acc = Progress()

        def report(step: Progress) -> None:
            nonlocal acc
            acc += step
            board.report.remote(task.name, acc)

        return convert_shard(task, self.codec, self.layout, self.options, report, self.lease_id)




def _pool_size(opts: RayOptions, n_tasks: int) -> int:
    """As many actors as asked (or as fit), never more than the cluster can place."""
    res = ray.cluster_resources()
    by_cpu = int(res.get("CPU", 1) // max(opts.cpus_per_worker, 1e-9))
    by_gpu = int(res.get("GPU", 0) // opts.gpus_per_worker) if opts.gpus_per_worker else by_cpu
    fits = min(by_cpu, by_gpu)
    if fits < 1:
        raise LatentShardsError(f"the Ray cluster ({res.get('CPU', 0)} CPUs, {res.get('GPU', 0)} GPUs) "
                                f"cannot place one worker of {opts.cpus_per_worker} CPUs and "
                                f"{opts.gpus_per_worker} GPUs")
    return max(1, min(opts.workers or fits, fits, n_tasks))


class RayExecutor:
    """Shards on an actor pool of a Ray cluster (embedded unless ``opts.address``)."""

    name = "ray"

    def __init__(self, opts: RayOptions | None = None):
        self.opts = opts or RayOptions()

    def run(self, tasks: Iterable[ShardTask], count: int, work: ShardWork,
            observer: ConvertObserver) -> ExecutorRun:
        if not count:
            return ExecutorRun({}, [])
        opts = self.opts
        ray_session.connect(opts.address)
        actor = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                           max_restarts=-1, max_task_retries=opts.max_task_retries)(ShardWorker)
        board = ProgressBoard.remote()
        threads = max(1, int(opts.cpus_per_worker))
        use_gpu = opts.gpus_per_worker > 0
        pool = [actor.remote(work.layout.root, work.fingerprint, work.options, threads, use_gpu,
                             work.lease_id)
                for _ in range(_pool_size(opts, count))]
        try:
            workers = ray.get([a.info.remote() for a in pool])
            return ExecutorRun(_drive(iter(tasks), pool, board, observer), workers)
        except ray.exceptions.RayError as exc:
            if isinstance(getattr(exc, "cause", None), LeaseLost):  # another run owns OUT now
                raise exc.cause from None
            # A shard whose worker raised, or died more often than Ray retries: the job stops,
            # finished shards stay and a rerun resumes from them.
            raise LatentShardsError(f"a shard could not be converted; rerun to resume: {exc}") from exc
        finally:
            for a in [*pool, board]:
                ray.kill(a)


def _drive(tasks: Iterator[ShardTask], pool: list, board,
           observer: ConvertObserver) -> dict[str, ShardResult]:
    """Keep every actor busy with one shard at a time until all shards are done; shards are
    taken from ``tasks`` only as actors free up (a streamed plan is never held whole)."""
    idle, pending, results = list(pool), {}, {}
    seen = Progress()
    exhausted = False
    while not exhausted or pending:
        while idle and not exhausted:
            t = next(tasks, None)
            if t is None:
                exhausted = True
                break
            a = idle.pop(0)
            pending[a.convert.remote(t, board)] = (t, a)
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        seen = _advance(observer, seen, ray.get(board.totals.remote()))
        for ref in ready:
            t, a = pending.pop(ref)
            results[t.name] = ray.get(ref)
            idle.append(a)
            observer.shard_done(len(results))
    _advance(observer, seen, ray.get(board.totals.remote()))
    return results


def _advance(observer: ConvertObserver, seen: Progress, totals: Progress) -> Progress:
    """Report what is new in ``totals`` since ``seen``; returns what is now seen."""
    step = totals - seen
    if step.images > 0:
        observer.update(step)
        return totals
    return seen
