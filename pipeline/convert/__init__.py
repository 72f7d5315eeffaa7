"""Conversion of an image dataset into latent shards, split by job.

- `plan`: the shard plan (fixed slices of the sorted listing) and ``plan.json``;
- `worker`: one shard end to end (read → prepare → encode → tar → index);
- `resume`: what a previous run finished, from index footers;
- `driver`: `convert_dataset(job, executor)` (list → plan → resume → run → merge → manifest)
  and the in-process `LocalExecutor`. Other executors (Ray: ``jobs.ray_convert``) implement
  the `Executor` protocol.

It may import the shard format, sources, images, the runtime codec and storage.
"""

from pipeline.convert.driver import (
    ConvertJob,
    ConvertObserver,
    ConvertSummary,
    Executor,
    ExecutorRun,
    LocalExecutor,
    NullObserver,
    ShardWork,
    convert_dataset,
    resolve_device,
)
from pipeline.convert.plan import ListingPlan, ShardPlan, ShardRecord, ShardTask, UriListPlan, plan_shards
from pipeline.convert.worker import (
    ENCODE_ERROR,
    MISSING,
    READ_ERROR,
    RETRYABLE,
    ConvertOptions,
    Progress,
    ShardResult,
    convert_shard,
)

__all__ = [
    "ENCODE_ERROR", "MISSING", "READ_ERROR", "RETRYABLE", "ConvertJob", "ConvertObserver",
    "ConvertOptions", "ConvertSummary", "Executor", "ExecutorRun", "LocalExecutor", "NullObserver",
    "Progress", "ShardResult", "ShardTask", "ShardWork", "convert_dataset", "convert_shard",
    "plan_shards", "resolve_device", "ListingPlan", "ShardPlan", "ShardRecord", "UriListPlan",
]
