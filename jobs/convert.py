"""`latents convert`: list → plan shards → skip done → convert the rest → merge index + manifest.

Shards run on an embedded (or remote) Ray cluster by default (`jobs.ray_convert`), or
in-process one after another with ``executor="local"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace

import fsspec
import torch
from rich.console import Console

from jobs.progress import ConvertBar
from pipeline.codec import checkpoint
from pipeline.codec.codec import Codec
from pipeline.codec.load import CodecSpec, codec_from_checkpoint, read_spec
from pipeline.convert import (
    ConvertOptions,
    ShardResult,
    ShardTask,
    convert_shard,
    plan_shards,
    read_shard_result,
    shard_done,
)
from pipeline.errors import DatasetError
from pipeline.shards.layout import Layout, atomic_write, exists, read_file
from pipeline.shards.lease import ConvertLease
from pipeline.shards.manifest import RunInfo, build_manifest, merge_indices, write_manifest
from pipeline.sources import detect_format, list_source
from pipeline.sources.base import canonical_uri


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: embedded local Ray; "auto" or "ray://host:10001"
    workers: int = 0  # 0: as many as the cluster's CPUs (or GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_task_retries: int = 3


@dataclass(frozen=True)
class ConvertJob:
    src: str
    out: str
    fmt: str = "auto"  # see pipeline.sources.READERS; auto detects where unambiguous
    split: str | None = None  # None: every split of the layout ("train" for a plain folder)
    codec: CodecSpec = field(default_factory=CodecSpec)
    options: ConvertOptions = field(default_factory=ConvertOptions)
    torch_threads: int = 0  # 0: torch's default
    device: str = "auto"  # where g_a runs: auto (CUDA if present), cpu, cuda, cuda:N
    command: tuple[str, ...] = ()
    progress: bool = True
    executor: str = "ray"  # "ray" (embedded local cluster unless ray.address) or "local"
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass(frozen=True)
class ConvertSummary:
    manifest: dict
    converted: int  # shards converted by this run
    workers: list  # {pid, device, node} of each worker that ran shards
    skipped: int  # shards already done (resume)
    seconds: float
    images_per_s: float
    failures_by_reason: dict


def _prepare_codec(job: ConvertJob, layout: Layout) -> tuple[Codec, str]:
    """Load the codec and place its exact checkpoint under OUT/codec/ (refusing a different one)."""
    ck = read_spec(job.codec)
    codec = codec_from_checkpoint(ck, job.codec.describe())
    if exists(layout.codec_identity):
        old = json.loads(read_file(layout.codec_identity))["fingerprint"]
        if old != codec.identity.fingerprint:
            raise DatasetError(
                f"{layout.root} already holds shards written by codec {old[:16]}…, not "
                f"{codec.identity.fingerprint[:16]}…; convert into a new OUT folder")
    data = checkpoint.to_bytes(ck)
    atomic_write(layout.codec_checkpoint, data)
    atomic_write(layout.codec_identity,
                 (json.dumps(codec.identity.to_json(), indent=2, sort_keys=True) + "\n").encode())
    return codec, hashlib.sha256(data).hexdigest()


def _check_plan(layout: Layout, job: ConvertJob, tasks: list[ShardTask]) -> None:
    """Record the shard plan on the first run; refuse a resume whose plan differs.

    A shard counts as done when its index exists, so resuming with another shard size,
    preprocessing, split or a changed source would silently mix two different plans.
    """
    plan = {
        "source": job.src, "format": job.fmt, "split": job.split,
        "shard_size": job.options.shard_size, "preprocessing": job.options.policy.to_json(),
        "shards": [{"name": t.name, "entries": len(t.entries),
                    "keys_sha256": hashlib.sha256("\n".join(e.key for e in t.entries).encode()).hexdigest()}
                   for t in tasks],
    }
    data = (json.dumps(plan, indent=2, sort_keys=True) + "\n").encode()
    if exists(layout.plan):
        old = json.loads(read_file(layout.plan))
        if old != json.loads(data):
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise DatasetError(
                f"{layout.root} was started with another plan (differs in: {', '.join(diff)}); "
                "rerun with the original source and options to resume, or convert into a new OUT")
        return
    atomic_write(layout.plan, data)


def _sweep_temp_files(layout: Layout) -> None:
    """Remove temp files a killed run left behind (local OUT only; object stores get one PUT)."""
    fs, path = fsspec.core.url_to_fs(layout.url("shards"))
    if "file" in fs.protocol and os.path.isdir(path):
        for name in os.listdir(path):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(path, name))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    return dev


def _run_shards(tasks: list[ShardTask], codec: Codec, layout: Layout, job: ConvertJob,
                bar: ConvertBar) -> tuple[dict[str, ShardResult], list[dict]]:
    if job.executor == "ray":
        from jobs.ray_convert import run_on_ray  # Ray is imported only when asked for

        return run_on_ray(tasks, layout.root, codec.identity.fingerprint, job.options, job.ray, bar)
    if job.executor != "local":
        raise ValueError(f"unknown executor {job.executor!r}; choose ray or local")
    results = {}
    for i, task in enumerate(tasks):
        results[task.name] = convert_shard(task, codec, layout, job.options, bar.update)
        bar.shards(i + 1, len(tasks))
    return results, [{"pid": os.getpid(), "device": str(codec.device), "node": "local"}]


def run_convert(job: ConvertJob, console: Console | None = None) -> ConvertSummary:
    if job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    src = canonical_uri(job.src)
    job = replace(job, src=src, out=canonical_uri(job.out),
                  fmt=detect_format(src) if job.fmt == "auto" else job.fmt)
    layout = Layout.at(job.out)
    listing = list_source(job.fmt, job.src, split=job.split)
    if not listing.items and not listing.failures:
        raise DatasetError(f"no image found under {job.src} (format {job.fmt}); image files end "
                           "in .jpg, .jpeg, .png, .webp, …")
    with ConvertLease(layout):  # one writer per OUT: a second run refuses, naming the first
        return _convert_leased(job, layout, listing, console)


def _convert_leased(job: ConvertJob, layout: Layout, listing, console: Console | None) -> ConvertSummary:
    codec, ck_sha = _prepare_codec(job, layout)
    codec.to(resolve_device(job.device))
    # Pad to the codec's own multiple, whatever the caller's policy said.
    job = replace(job, options=replace(job.options, policy=replace(
        job.options.policy, multiple=codec.identity.multiple)))
    tasks = plan_shards(listing, job.options.shard_size)
    _check_plan(layout, job, tasks)
    _sweep_temp_files(layout)
    todo = [t for t in tasks if not shard_done(layout, t)]
    with ConvertBar(sum(len(t.entries) for t in todo), console, job.progress) as bar:
        done, workers = _run_shards(todo, codec, layout, job, bar)
    results = [done[t.name] if t.name in done else read_shard_result(layout, t) for t in tasks]
    _, failed = merge_indices(layout, [t.name for t in tasks])
    run = RunInfo(job.command, job.src, job.fmt, listing.classes, job.options.policy.to_json(),
                  codec.identity.to_json(), ck_sha)
    manifest = build_manifest(run, [r.to_json() for r in results])
    write_manifest(layout, manifest)
    reasons: dict[str, int] = {}
    for r in failed.column("reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    n = bar.total.images
    summary = ConvertSummary(manifest, len(todo), workers, len(tasks) - len(todo), bar.elapsed,
                             n / bar.elapsed if n else 0.0, reasons)
    write_run_log(layout, job, summary)
    return summary


def write_run_log(layout: Layout, job: ConvertJob, s: ConvertSummary) -> None:
    """Wall time, images/s, workers and devices of this run, beside (not in) the manifest.

    The manifest stays a pure function of inputs and options, so reruns change no byte of
    it; each run's operational figures go to ``OUT/logs/convert-<UTC time>.json``.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = {"command": list(job.command), "executor": job.executor, "seconds": round(s.seconds, 3),
           "images_per_s": round(s.images_per_s, 3), "shards_converted": s.converted,
           "shards_skipped": s.skipped, "workers": s.workers, "failures_by_reason": s.failures_by_reason}
    atomic_write(layout.url("logs", f"convert-{stamp}-{os.getpid()}.json"),
                 (json.dumps(log, indent=2, sort_keys=True) + "\n").encode())


if __name__ == "__main__":  # `python -m jobs.convert SRC OUT [options]`, e.g. under `ray job submit`
    import sys

    from jobs.cli import app

    app(["convert", *sys.argv[1:]])
