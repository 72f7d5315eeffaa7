"""`latents convert`: list → plan shards → skip done → convert the rest → merge index + manifest.

This issue's slice runs shards in-process, one after another; the Ray actor pool plugs in
at `_run_shards` (next issue).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

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
    shard_done,
)
from pipeline.errors import DatasetError
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout, atomic_write, exists, read_file
from pipeline.shards.manifest import RunInfo, build_manifest, merge_indices, write_manifest
from pipeline.sources import list_source


@dataclass(frozen=True)
class ConvertJob:
    src: str
    out: str
    fmt: str = "imagefolder"
    split: str = "train"
    codec: CodecSpec = field(default_factory=CodecSpec)
    options: ConvertOptions = field(default_factory=ConvertOptions)
    torch_threads: int = 0  # 0: torch's default
    device: str = "auto"  # where g_a runs: auto (CUDA if present), cpu, cuda, cuda:N
    command: tuple[str, ...] = ()
    progress: bool = True


@dataclass(frozen=True)
class ConvertSummary:
    manifest: dict
    converted: int  # shards converted by this run
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    return dev


def _result_from_disk(layout: Layout, task: ShardTask) -> ShardResult:
    tar = read_file(layout.shard_tar(task.name))
    index_data = read_file(layout.shard_index(task.name))
    rows = idx.read_table(layout.shard_index(task.name)).to_pylist()
    ok = [r for r in rows if r["status"] == idx.OK]
    return ShardResult(task.name, task.split, len(ok), len(rows) - len(ok), len(tar),
                       hashlib.sha256(tar).hexdigest(), hashlib.sha256(index_data).hexdigest(),
                       sum(r["source_bytes"] for r in ok), sum(r["latent_size"] for r in ok),
                       sum(r["enc_h"] * r["enc_w"] for r in ok))


def _run_shards(tasks: list[ShardTask], codec: Codec, layout: Layout, job: ConvertJob,
                bar: ConvertBar) -> dict[str, ShardResult]:
    results = {}
    for i, task in enumerate(tasks):
        results[task.name] = convert_shard(task, codec, layout, job.options, bar.update)
        bar.shards(i + 1, len(tasks))
    return results


def run_convert(job: ConvertJob, console: Console | None = None) -> ConvertSummary:
    if job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    layout = Layout.at(job.out)
    listing = list_source(job.fmt, job.src, split=job.split)
    if not listing.items and not listing.failures:
        raise DatasetError(f"no image found under {job.src} (format {job.fmt}); image files end "
                           "in .jpg, .jpeg, .png, .webp, …")
    tasks = plan_shards(listing, job.options.shard_size)
    codec, ck_sha = _prepare_codec(job, layout)
    codec.to(resolve_device(job.device))
    todo = [t for t in tasks if not shard_done(layout, t)]
    with ConvertBar(sum(len(t.entries) for t in todo), console, job.progress) as bar:
        done = _run_shards(todo, codec, layout, job, bar)
    results = [done[t.name] if t.name in done else _result_from_disk(layout, t) for t in tasks]
    _, failed = merge_indices(layout, [t.name for t in tasks])
    run = RunInfo(job.command, job.src, job.fmt, listing.classes, job.options.policy.to_json(),
                  codec.identity.to_json(), ck_sha)
    manifest = build_manifest(run, [r.to_json() for r in results])
    write_manifest(layout, manifest)
    reasons: dict[str, int] = {}
    for r in failed.column("reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    n = bar.total.images
    return ConvertSummary(manifest, len(todo), len(tasks) - len(todo), bar.elapsed,
                          n / bar.elapsed if n else 0.0, reasons)
