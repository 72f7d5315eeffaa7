"""The shard plan: fixed slices of the sorted listing, recorded in ``OUT/plan.json``.

The plan is a pure function of the listing and the shard size, so every run (first, resumed,
on another machine) cuts the same shards. ``plan.json`` pins it: a resume with another
source, split, shard size or preprocessing is refused instead of mixing two plans. Retry
rounds (``convert --retry-failed``) are appended to it as extra shards of the keys they
retry, so a crash in the middle of a retry is finished by a plain rerun.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import DatasetError
from pipeline.shards.layout import Layout, atomic_write, exists, read_file
from pipeline.sources.base import Listing, ListingFailure, SourceItem

Entry = SourceItem | ListingFailure


@dataclass(frozen=True)
class ShardTask:
    split: str
    number: int
    entries: tuple[Entry, ...]

    @property
    def name(self) -> str:
        return Layout.shard_name(self.split, self.number)


def plan_shards(listing: Listing, shard_size: int) -> list[ShardTask]:
    """Fixed slices of the sorted listing, per split: the same plan on every run."""
    if shard_size <= 0:
        raise ValueError(f"shard size must be positive, got {shard_size}")
    tasks = []
    for split in listing.splits():
        entries = sorted([e for e in (*listing.items, *listing.failures) if e.split == split],
                         key=lambda e: e.key)
        for n, start in enumerate(range(0, len(entries), shard_size)):
            tasks.append(ShardTask(split, n, tuple(entries[start : start + shard_size])))
    return tasks


def _keys_sha256(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def _shard_json(t: ShardTask) -> dict:
    keys = [e.key for e in t.entries]
    return {"name": t.name, "entries": len(keys), "keys_sha256": _keys_sha256(keys)}


@dataclass(frozen=True)
class RecordedPlan:
    """What ``plan.json`` holds: the base plan's header and shards, and the retry rounds."""

    header: dict  # source, format, split, shard_size, preprocessing
    shards: list[dict]
    retries: list[list[dict]]  # per round: {name, split, number, keys}

    def to_bytes(self) -> bytes:
        d = {**self.header, "shards": self.shards}
        if self.retries:
            d["retries"] = self.retries
        return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RecordedPlan:
        d = json.loads(data)
        retries = d.pop("retries", [])
        shards = d.pop("shards")
        return cls(d, shards, retries)


def check_plan(layout: Layout, header: dict, tasks: list[ShardTask]) -> RecordedPlan:
    """Record the shard plan on the first run; refuse a resume whose plan differs.

    A shard counts as done when its index exists, so resuming with another shard size,
    preprocessing, split or a changed source would silently mix two different plans.
    """
    fresh = RecordedPlan(header, [_shard_json(t) for t in tasks], [])
    if exists(layout.plan):
        old = RecordedPlan.from_bytes(read_file(layout.plan))
        if (old.header, old.shards) != (json.loads(json.dumps(header)), fresh.shards):
            diff = sorted(k for k in header if old.header.get(k) != header[k])
            if old.shards != fresh.shards:
                diff.append("shards")
            raise DatasetError(
                f"{layout.root} was started with another plan (differs in: {', '.join(diff)}); "
                "rerun with the original source and options to resume, or convert into a new OUT")
        return old
    atomic_write(layout.plan, fresh.to_bytes())
    return fresh


def retry_tasks(recorded: RecordedPlan, tasks: list[ShardTask]) -> list[ShardTask]:
    """The shards of every recorded retry round, their entries looked up in the base plan."""
    by_key = {e.key: e for t in tasks for e in t.entries}
    out = []
    for rnd in recorded.retries:
        for s in rnd:
            out.append(ShardTask(s["split"], s["number"], tuple(by_key[k] for k in s["keys"])))
    return out


def add_retry_round(layout: Layout, recorded: RecordedPlan, tasks: list[ShardTask],
                    keys_by_split: dict[str, list[str]], shard_size: int) -> list[ShardTask]:
    """Append a retry round for ``keys_by_split`` (new shards numbered after each split's last)
    to ``plan.json`` before anything is converted; returns the round's tasks."""
    last: dict[str, int] = {}
    for t in [*tasks, *retry_tasks(recorded, tasks)]:
        last[t.split] = max(last.get(t.split, -1), t.number)
    rnd = []
    for split in sorted(keys_by_split):
        keys = sorted(keys_by_split[split])
        for i, start in enumerate(range(0, len(keys), shard_size)):
            rnd.append({"split": split, "number": last.get(split, -1) + 1 + i,
                        "keys": keys[start : start + shard_size]})
    updated = RecordedPlan(recorded.header, recorded.shards, [*recorded.retries, rnd])
    atomic_write(layout.plan, updated.to_bytes())
    return retry_tasks(RecordedPlan(recorded.header, recorded.shards, [rnd]), tasks)
