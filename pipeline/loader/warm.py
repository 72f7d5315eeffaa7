"""Fill the warm decoded-latent cache ahead of training, with every core.

Training fills the cache during its first epoch with as many processes as it has DataLoader
workers; ``warm_cache`` does the same work up front with a process pool over whole shards,
so that even the first training epoch reads warm (and several runs on one dataset pay once).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.errors import LatentShardsError
from pipeline.loader import stages
from pipeline.loader.dataset import LatentLoaderConfig, LatentShardDataset
from pipeline.shards.dataset import LatentDataset


@dataclass(frozen=True)
class WarmResult:
    shards: int
    samples: int  # samples the cache holds for the warmed splits afterwards
    expected: int  # samples those splits have
    stats: dict


_state: dict = {}


def _init(datasets: dict[str, LatentShardDataset]) -> None:
    torch.set_num_threads(1)  # parallelism comes from the processes
    _state["datasets"] = datasets


def _warm_shard(job: tuple[str, str, str, int]) -> tuple[str, int]:
    split, url, name, n = job
    ds = _state["datasets"][split]
    if len(ds.cache.positions(ds.shard_sha256(name), 0, n)) == n:
        return name, n  # already warm
    got = sum(1 for _ in ds.decoded([stages.ShardSlice(url, name, 0, n)], ds.codec()))
    return name, got


def warm_cache(root: str, cache: str, max_bytes: int = 20 * 2**30, splits: list[str] | None = None,
               workers: int = 1, on_shard: Callable[[str, int], None] | None = None,
               target: str = "class") -> WarmResult:
    """Decode every sample of ``splits`` (default: all) of the dataset at ``root`` into the cache
    that loaders of ``target`` ("class", "detection", "segmentation") read."""
    manifest = LatentDataset.open(root).manifest
    names = splits or manifest.splits_with_samples()
    unknown = [s for s in names if s not in manifest.splits]
    if unknown:
        raise LatentShardsError(f"{root} has no split {', '.join(map(repr, unknown))}; "
                                f"splits: {', '.join(manifest.splits)}")
    datasets = {s: LatentShardDataset(LatentLoaderConfig(root, split=s, train=False, window=None,
                                                         cache=cache, cache_max_bytes=max_bytes,
                                                         target=target))
                for s in names}
    for ds in datasets.values():
        ds.codec()  # loaded once here, inherited by the forked workers
    jobs = [(s, url, name, n) for s, ds in datasets.items() for url, name, n in ds.shards]
    if workers > 1:
        with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(datasets,)) as pool:
            for name, got in pool.imap_unordered(_warm_shard, jobs):
                if on_shard:
                    on_shard(name, got)
    else:
        _init(datasets)
        for job in jobs:
            name, got = _warm_shard(job)
            if on_shard:
                on_shard(name, got)
    any_ds = next(iter(datasets.values()))
    held = sum(len(any_ds.cache.positions(ds.shard_sha256(name), 0, n))
               for ds in datasets.values() for _, name, n in ds.shards)
    return WarmResult(len(jobs), held, sum(ds.total for ds in datasets.values()), any_ds.cache.stats())
