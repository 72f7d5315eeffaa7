"""What a previous run finished: one listing of ``shards/`` and the index footers, no tars.

A shard is done when its Parquet index exists (the index is written after the tar, both
atomically). Its figures (`ShardResult`) sit in that index's footer, so resuming a dataset
of N shards costs one directory listing and N small ranged reads, whatever the tars weigh.
Indices written before the figures moved into the footer are read whole, with their tar.
"""

from __future__ import annotations

import fsspec

from pipeline.convert.plan import ShardTask
from pipeline.convert.worker import ShardResult
from pipeline.errors import DatasetError
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout
from pipeline.storage import read_file, with_retries


def finished_shards(layout: Layout) -> set[str]:
    """Names of the shards whose index exists, from one listing of ``OUT/shards/``."""
    def once() -> set[str]:
        fs, path = fsspec.core.url_to_fs(layout.url("shards"))
        try:
            names = fs.ls(path, detail=False)
        except FileNotFoundError:
            return set()
        return {n.rstrip("/").rsplit("/", 1)[-1][: -len(".parquet")] for n in names
                if n.endswith(".parquet") and not n.rsplit("/", 1)[-1].startswith(".")}

    return with_retries(once, f"listing {layout.url('shards')}")


def shard_result(layout: Layout, task: ShardTask) -> ShardResult:
    """The figures of a shard a previous run finished, from its index footer."""
    url = layout.shard_index(task.name)
    try:
        figures = idx.footer_metadata(url).get(idx.SHARD_FIGURES)
        if figures is None:
            return _shard_result_from_files(layout, task)
        result = ShardResult.from_json(figures)
    except (DatasetError, ValueError, OSError) as exc:
        raise DatasetError(f"{url} is unreadable ({exc}); delete it and its .tar, then rerun "
                           "to convert that shard again") from exc
    if result.name != task.name:
        raise DatasetError(f"{url} records the figures of shard {result.name}, not {task.name}; "
                           "delete it and its .tar, then rerun")
    return result


def _shard_result_from_files(layout: Layout, task: ShardTask) -> ShardResult:
    """Figures of a shard written before they went into the index footer (reads it all)."""
    tar = read_file(layout.shard_tar(task.name))
    table = idx.table_from_bytes(read_file(layout.shard_index(task.name)))
    return ShardResult.of(task, table, tar)

