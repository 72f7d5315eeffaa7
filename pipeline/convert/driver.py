"""`convert_dataset`: list → plan → skip done → executor runs the rest → merge → manifest.

The driver owns every step but one: where shards run. That is the executor's job, injected
by the caller. `LocalExecutor` (here) converts shards in this process one after another;
the Ray actor pool lives in ``jobs.ray_convert`` (the only place that imports Ray). Both see
the same `ShardWork` and report to the same `ConvertObserver`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

import fsspec
import torch

from pipeline.codec import checkpoint
from pipeline.codec.codec import Codec
from pipeline.codec.load import CodecSpec, codec_from_checkpoint, read_spec
from pipeline.convert.plan import (
    ListingPlan,
    ShardPlan,
    ShardRecord,
    ShardTask,
    UriListPlan,
    add_retry_round,
    check_plan,
    recorded_order,
    retry_tasks,
)
from pipeline.convert.resume import finished_shards, shard_result
from pipeline.convert.worker import RETRYABLE, ConvertOptions, Progress, ShardResult, convert_shard
from pipeline.errors import ConfigError, DatasetError, SourceError, redact
from pipeline.images import ImagePolicy
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout
from pipeline.shards.lease import ConvertLease
from pipeline.shards.manifest import Manifest, RunInfo, build_manifest, merge_indices, write_manifest
from pipeline.sources import detect_format, list_source
from pipeline.sources.base import canonical_uri
from pipeline.sources.uris import UriList
from pipeline.storage import atomic_write, exists, read_file


@dataclass(frozen=True)
class ConvertJob:
    src: str
    out: str
    fmt: str = "auto"  # see pipeline.sources.READERS; auto detects where unambiguous
    split: str | None = None  # None: every split of the layout ("train" for a plain folder)
    codec: CodecSpec = field(default_factory=CodecSpec)
    options: ConvertOptions = field(default_factory=ConvertOptions)
    torch_threads: int = 0  # 0: torch's default
    device: str = "auto"  # where g_a runs in-process: auto (CUDA if present), cpu, cuda, cuda:N
    command: tuple[str, ...] = ()
    retry_failed: bool = False  # also retry the ledger's transient failures as new shards


class ConvertObserver(Protocol):
    """What a live display needs: the work ahead, each chunk's progress, shards finished."""

    def begin(self, images: int, shards: int) -> None: ...

    def update(self, step: Progress) -> None: ...

    def shard_done(self, done: int) -> None: ...


class NullObserver:
    def begin(self, images: int, shards: int) -> None:
        pass

    def update(self, step: Progress) -> None:
        pass

    def shard_done(self, done: int) -> None:
        pass


@dataclass(frozen=True)
class ShardWork:
    """Everything an executor needs besides the shards: where they go, the codec, the options.

    Remote executors load the codec from ``layout.codec_checkpoint`` (the dataset's own bytes)
    and check it against ``fingerprint``.
    """

    layout: Layout
    codec: Codec
    options: ConvertOptions
    lease_id: str = ""  # the run holding OUT's lease: shards are written only while it does

    @property
    def fingerprint(self) -> str:
        return self.codec.identity.fingerprint


@dataclass(frozen=True)
class ExecutorRun:
    results: dict[str, ShardResult]  # by shard name
    workers: list[dict]  # {pid, device, node} of each worker that ran shards


class Executor(Protocol):
    name: str

    def run(self, tasks: Iterable[ShardTask], count: int, work: ShardWork,
            observer: ConvertObserver) -> ExecutorRun:
        """Convert each of the ``count`` tasks with `convert_shard`, taking them from ``tasks``
        only as workers free up; raise if one cannot be converted."""
        ...


class LocalExecutor:
    """Shards one after another in this process, with the driver's codec."""

    name = "local"

    def run(self, tasks: Iterable[ShardTask], count: int, work: ShardWork,
            observer: ConvertObserver) -> ExecutorRun:
        results = {}
        for task in tasks:  # a plan may hand shards over as it reads them: never len(tasks)
            results[task.name] = convert_shard(task, work.codec, work.layout, work.options, observer.update,
                                               work.lease_id)
            observer.shard_done(len(results))
        return ExecutorRun(results, [{"pid": os.getpid(), "device": str(work.codec.device), "node": "local"}])


@dataclass(frozen=True)
class ConvertSummary:
    manifest: Manifest
    converted: int  # shards converted by this run
    workers: list  # {pid, device, node} of each worker that ran shards
    skipped: int  # shards already done (resume)
    seconds: float
    images_per_s: float
    failures_by_reason: dict
    retried: int = 0  # ledger rows retried by --retry-failed
    recovered: int = 0  # of those, how many are samples now


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    return dev


def prepare_codec(spec: CodecSpec, layout: Layout, policy: ImagePolicy | None = None) -> tuple[Codec, str]:
    """Load the codec, check ``policy`` against it, and place its exact checkpoint under
    OUT/codec/ (refusing a different one).

    ``codec.json`` is written after ``codec.pt``; when it already names this codec, both are
    in place and nothing is written again.
    """
    ck = read_spec(spec)
    codec = codec_from_checkpoint(ck, spec.describe())
    if policy is not None:
        check_policy(policy, codec)
    if exists(layout.codec_identity):
        ident = json.loads(read_file(layout.codec_identity))
        if ident["fingerprint"] != codec.identity.fingerprint:
            raise DatasetError(
                f"{layout.root} already holds shards written by codec {ident['fingerprint'][:16]}…, not "
                f"{codec.identity.fingerprint[:16]}…; convert into a new OUT folder")
        # the same codec, perhaps saved as other bytes: the manifest names the bytes in OUT
        sha = ident.get("checkpoint_sha256") or hashlib.sha256(read_file(layout.codec_checkpoint)).hexdigest()
        return codec, sha
    data = checkpoint.to_bytes(ck)
    sha = hashlib.sha256(data).hexdigest()
    atomic_write(layout.codec_checkpoint, data)
    atomic_write(layout.codec_identity, (json.dumps({**codec.identity.to_json(), "checkpoint_sha256": sha},
                                                    indent=2, sort_keys=True) + "\n").encode())
    return codec, sha


def sweep_temp_files(layout: Layout) -> None:
    """Remove temp files a killed run left behind (local OUT only; object stores get one PUT)."""
    fs, path = fsspec.core.url_to_fs(layout.url("shards"))
    if "file" in fs.protocol and os.path.isdir(path):
        for name in os.listdir(path):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(path, name))


def convert_dataset(job: ConvertJob, executor: Executor | None = None,
                    observer: ConvertObserver | None = None) -> ConvertSummary:
    """Convert ``job.src`` into the latent dataset ``job.out``, resuming what is done.

    Holds ``OUT/convert.lease`` throughout, so a second run into the same OUT refuses.
    """
    executor = executor or LocalExecutor()
    observer = observer or NullObserver()
    if job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    src = canonical_uri(job.src)
    job = replace(job, src=src, out=canonical_uri(job.out))
    job = replace(job, fmt=detect_format(src) if job.fmt == "auto" else job.fmt)
    if job.fmt not in WALKS_NAMED_FILES:
        check_out_apart(job.src, job.out)
    layout = Layout.at(job.out)
    if job.fmt == "uris" and job.options.order is not None:
        raise ConfigError("a URI list is converted in its own order (shuffle the list for training data "
                          "read in a stream); leave out --order")
    if job.options.order is None:  # a new OUT is hashed; a resume keeps the order it started with
        job = replace(job, options=replace(job.options, order=recorded_order(layout) or "hashed"))
    plan = make_plan(job)
    if not plan.records:
        raise SourceError(f"no image found under {redact(job.src)} (format {job.fmt}); image files "
                          "end in .jpg, .jpeg, .png, .webp, …")
    with ConvertLease(layout) as lease:  # one writer per OUT: a second run refuses, naming the first
        return _convert_leased(job, layout, plan, executor, observer, lease)


#: layouts read through the files their annotations name (VOC's id lists, COCO's JSON), not by
#: walking the tree: a dataset written inside such a root is never read back as input
WALKS_NAMED_FILES = ("voc", "coco")


def check_out_apart(src: str, out: str) -> None:
    """OUT may not be SRC or lie inside it: the next run (or any reader of SRC) would take the
    dataset's own files (tars, Parquet indices, PNG masks) for source images or URI lists."""
    def real(u: str) -> str:
        return u if "://" in u else os.path.realpath(u)

    s, o = real(src), real(out)
    if o == s or o.startswith(s.rstrip("/") + "/"):
        where = "is" if o == s else "lies inside"
        raise ConfigError(f"OUT {redact(out)} {where} SRC {redact(src)}: the dataset would be written "
                          "into its own source and read as input by the next run; choose an OUT "
                          "outside SRC")


def check_policy(policy: ImagePolicy, codec: Codec) -> None:
    """Options that cannot make sense with this codec, refused before anything is written."""
    cell = codec.identity.downsample
    if 0 < policy.size < cell:
        raise ConfigError(f"--size {policy.size} is below this codec's minimum of {cell} px (one "
                          f"latent cell): every image would become padding; use --size {cell} or "
                          "more, or 0 to keep each image's size")


def canonical_command(job: ConvertJob) -> tuple[str, ...]:
    """The manifest's record of how the dataset was made: the options that decide its bytes,
    spelled one way (the absolute, redacted source; every such option given), so relative or
    absolute paths, option order and executor choices give the same manifest. The output is
    written ``OUT``: the dataset is the same wherever it is written or moved. The command as
    typed goes to ``OUT/logs/``."""
    p = job.options.policy
    return ("latents", "convert", redact(job.src), "OUT", "--format", job.fmt,
            *(("--split", job.split) if job.split else ()),
            "--codec", redact(job.codec.describe()), "--size", str(p.size), *(("--crop",) if p.crop else ()),
            "--min-side", str(p.min_side), "--max-pixels", str(p.max_pixels),
            *(("--scales", ",".join(str(s) for s in p.scales)) if p.scales else ()),
            *(("--order", order) if (order := recorded_order_of(job)) else ()),
            "--shard-size", str(job.options.shard_size), "--batch-size", str(job.options.batch_size))


def recorded_order_of(job: ConvertJob) -> str | None:
    """The shard order plan.json and the manifest's command record: none for a URI list (its
    own order) and for ``sorted`` (what every plan from before the option was), so those keep
    the bytes they had."""
    return None if job.fmt == "uris" or job.options.order == "sorted" else job.options.order


def make_plan(job: ConvertJob) -> ShardPlan:
    """URI lists are planned by streaming them; the other layouts are listed in memory."""
    if job.fmt == "uris":
        return UriListPlan(UriList.scan(job.src, job.split), job.options.shard_size)
    return ListingPlan(list_source(job.fmt, job.src, split=job.split), job.options.shard_size,
                       job.options.order or "hashed")


def _retryable_keys(layout: Layout, names: list[str]) -> dict[str, list[str]]:
    """Keys whose latest row in the shard indices is a failure with a transient reason."""
    cols = ["key", "split", "status", "reason"]
    tables = [idx.read_table(layout.shard_index(n)).select(cols) for n in names]
    table = idx.latest_rows(idx.concat(tables))
    out: dict[str, list[str]] = {}
    for r in table.to_pylist():
        if r["status"] == idx.FAILED and r["reason"] in RETRYABLE:
            out.setdefault(r["split"], []).append(r["key"])
    return out


def _convert_leased(job: ConvertJob, layout: Layout, plan: ShardPlan, executor: Executor,
                    observer: ConvertObserver, lease: ConvertLease) -> ConvertSummary:
    t0 = time.perf_counter()
    codec, ck_sha = prepare_codec(job.codec, layout, job.options.policy)
    codec.to(resolve_device(job.device))
    # Pad to the codec's own multiple, whatever the caller's policy said.
    job = replace(job, options=replace(job.options, policy=replace(
        job.options.policy, multiple=codec.identity.multiple)))
    header = {"source": redact(job.src), "format": job.fmt, "split": job.split,
              "shard_size": job.options.shard_size, "preprocessing": job.options.policy.to_json()}
    if order := recorded_order_of(job):
        header["order"] = order
    lease.check("plan.json")
    recorded = check_plan(layout, header, plan)
    sweep_temp_files(layout)
    done = finished_shards(layout)
    records = [*plan.records, *(ShardRecord(s["split"], s["number"], len(s["keys"]), "")
                                for rnd in recorded.retries for s in rnd)]
    todo = [r for r in records if r.name not in done]
    pending_retries = [t for t in retry_tasks(recorded, plan) if t.name not in done] \
        if any(r.name not in done for r in records[len(plan.records):]) else []
    work = ShardWork(layout, codec, job.options, lease.run_id)
    observer.begin(sum(r.entries for r in todo), len(todo))
    names = {r.name for r in todo}
    run = executor.run(itertools.chain(plan.tasks(names), pending_retries), len(todo), work, observer)
    results, workers = dict(run.results), list(run.workers)
    # --retry-failed: a retry round left unfinished by a crash was just finished, and that was
    # the retry; otherwise the ledger's transient failures become a new round now.
    retried = [ShardRecord.of(t) for t in pending_retries]
    if job.retry_failed and not retried:
        keys = _retryable_keys(layout, [r.name for r in records])
        if keys:
            lease.check("plan.json")
            new = add_retry_round(layout, recorded, plan, keys, job.options.shard_size)
            retried = [ShardRecord.of(t) for t in new]
            observer.begin(sum(r.entries for r in retried), len(retried))
            more = executor.run(new, len(new), work, observer)
            results.update(more.results)
            workers += more.workers
            records += retried
            todo += retried
    final = [results[r.name] if r.name in results else shard_result(layout, r) for r in records]
    lease.check("index.parquet, failures.parquet and manifest.json")
    manifest = _finish(job, layout, plan.classes, codec, ck_sha, final, todo)
    seconds = max(time.perf_counter() - t0, 1e-9)
    images = sum(r.entries for r in todo)
    recovered = sum(results[r.name].samples for r in retried)
    summary = ConvertSummary(manifest, len(todo), workers, len(records) - len(todo), seconds,
                             images / seconds, manifest.totals.failures_by_reason,
                             sum(r.entries for r in retried),
                             recovered)
    lease.check("its log")
    write_run_log(layout, job, executor.name, summary)
    return summary


def _finish(job: ConvertJob, layout: Layout, classes: tuple[str, ...], codec: Codec, ck_sha: str,
            results: list[ShardResult], todo: list[ShardRecord]) -> Manifest:
    """Merge the indices and write the manifest, unless an identical manifest is already there
    (a resume of a finished dataset then reads footers only)."""
    run = RunInfo(canonical_command(job), redact(job.src), job.fmt, classes,
                  job.options.policy.to_json(),
                  codec.identity.to_json(), ck_sha)
    shards = [r.to_json() for r in results]
    if not todo and exists(layout.manifest) and exists(layout.index) and exists(layout.failures):
        old = json.loads(read_file(layout.manifest))
        if _same_run(old, build_manifest(run, shards, idx.to_table([]))):
            return Manifest.from_json(old, str(layout.manifest))
    _, failed = merge_indices(layout, [r.name for r in results])
    manifest = build_manifest(run, shards, failed)
    write_manifest(layout, manifest)
    return Manifest.from_json(json.loads(json.dumps(manifest)))  # as it reads back from manifest.json


def _same_run(old: dict, new: dict) -> bool:
    """Whether ``old`` is the manifest of these shards and options (``new`` was built without
    the ledger, so its failure counts are not compared)."""
    def strip(m: dict) -> dict:
        m = json.loads(json.dumps(m))
        for d in (m.get("totals", {}), *m.get("splits", {}).values()):
            d.pop("failures", None)
            d.pop("failures_by_reason", None)
        return m

    return strip(old) == strip(new)


def write_run_log(layout: Layout, job: ConvertJob, executor: str, s: ConvertSummary) -> None:
    """Wall time, images/s, workers and devices of this run, beside (not in) the manifest.

    The manifest stays a pure function of inputs and options, so reruns change no byte of
    it; each run's operational figures go to ``OUT/logs/convert-<UTC time>.json``.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = {"command": [redact(a) for a in job.command], "executor": executor, "seconds": round(s.seconds, 3),
           "images_per_s": round(s.images_per_s, 3), "shards_converted": s.converted,
           "shards_skipped": s.skipped, "workers": s.workers, "failures_by_reason": s.failures_by_reason,
           "retried": s.retried, "recovered": s.recovered}
    atomic_write(layout.url("logs", f"convert-{stamp}-{os.getpid()}.json"),
                 (json.dumps(log, indent=2, sort_keys=True) + "\n").encode())
