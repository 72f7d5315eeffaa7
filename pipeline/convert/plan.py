"""The shard plan: fixed slices of the listing in a fixed order, recorded in ``OUT/plan.json``.

The order within a split is ``hashed`` (by the SHA-256 of each key: classes mixed in every
shard, so a streaming loader's shard shuffle and window buffer give near-random batches) or
``sorted`` (by key: class-per-folder sources then fill each shard with a few classes, which
a streaming loader cannot mix; datasets made before the order was an option are sorted).

The plan is a pure function of the listing and the shard size, so every run (first, resumed,
on another machine) cuts the same shards. ``plan.json`` pins it: a resume with another
source, split, shard size or preprocessing is refused instead of mixing two plans. Retry
rounds (``convert --retry-failed``) are appended to it as extra shards of the keys they
retry, so a crash in the middle of a retry is finished by a plain rerun.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.errors import ConfigError, DatasetError
from pipeline.shards.layout import Layout
from pipeline.sources.base import Listing, ListingFailure, SourceItem
from pipeline.sources.uris import UriList
from pipeline.storage import atomic_write, exists, read_file

Entry = SourceItem | ListingFailure


@dataclass(frozen=True)
class ShardTask:
    split: str
    number: int
    entries: tuple[Entry, ...]

    @property
    def name(self) -> str:
        return Layout.shard_name(self.split, self.number)


#: the orders a listing's shards can be cut in (see the module docstring)
ORDERS = ("hashed", "sorted")


def order_key(order: str):
    """The sort key of ``order`` over sample keys: the key itself, or its SHA-256 (ties,
    impossible in practice, broken by the key)."""
    if order not in ORDERS:
        raise ConfigError(f"--order is one of {', '.join(ORDERS)}, not {order!r}")
    if order == "sorted":
        return lambda key: key
    return lambda key: (hashlib.sha256(key.encode()).digest(), key)


def plan_shards(listing: Listing, shard_size: int, order: str = "hashed") -> list[ShardTask]:
    """Fixed slices of the listing in ``order``, per split: the same plan on every run."""
    _check_size(shard_size)
    tasks, key = [], order_key(order)
    for split in listing.splits():
        entries = sorted([e for e in (*listing.items, *listing.failures) if e.split == split],
                         key=lambda e: key(e.key))
        for n, start in enumerate(range(0, len(entries), shard_size)):
            tasks.append(ShardTask(split, n, tuple(entries[start : start + shard_size])))
    return tasks


def _check_size(shard_size: int) -> None:
    if shard_size <= 0:
        raise ConfigError(f"--shard-size must be positive, got {shard_size}")


def _keys_sha256(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@dataclass(frozen=True)
class ShardRecord:
    """One shard of a plan without its entries: what plan.json pins and resume needs."""

    split: str
    number: int
    entries: int
    keys_sha256: str

    @property
    def name(self) -> str:
        return Layout.shard_name(self.split, self.number)

    def to_json(self) -> dict:
        return {"name": self.name, "entries": self.entries, "keys_sha256": self.keys_sha256}

    @classmethod
    def of(cls, task: ShardTask) -> ShardRecord:
        return cls(task.split, task.number, len(task.entries), _keys_sha256([e.key for e in task.entries]))


class ShardPlan(Protocol):
    """The shards of a conversion: records up front, entries only when a shard is run."""

    classes: tuple[str, ...]
    records: list[ShardRecord]  # in plan order (split, number)

    def tasks(self, names: set[str]) -> Iterator[ShardTask]:
        """The named shards with their entries."""
        ...

    def entries(self, keys: set[str]) -> dict[str, Entry]:
        """The entries of these keys (for retry rounds)."""
        ...


class ListingPlan:
    """The plan of a listing held in memory (folder, ImageNet and Open Images readers)."""

    def __init__(self, listing: Listing, shard_size: int, order: str = "hashed"):
        self.classes = listing.classes
        self._tasks = plan_shards(listing, shard_size, order)
        self.records = [ShardRecord.of(t) for t in self._tasks]

    def tasks(self, names: set[str]) -> Iterator[ShardTask]:
        return (t for t in self._tasks if t.name in names)

    def entries(self, keys: set[str]) -> dict[str, Entry]:
        return {e.key: e for t in self._tasks for e in t.entries if e.key in keys}


class UriListPlan:
    """The plan of a URI list, streamed: per split, consecutive rows in the list's order (which
    the list's author decides: shuffle it for training data read in a stream).

    The driver holds the records (one per shard) and at most one filling shard per split;
    `tasks` reads the list again and hands shards over as they fill.
    """

    def __init__(self, uris: UriList, shard_size: int):
        _check_size(shard_size)
        self.uris, self.shard_size, self.classes = uris, shard_size, uris.classes
        records: list[ShardRecord] = []
        open_: dict[str, tuple[int, int, object]] = {}  # split → (number, rows so far, hasher)
        for batch in uris.batches():
            for e in batch:
                n, count, h = open_.get(e.split, (0, 0, None))
                if h is None:
                    h = hashlib.sha256(e.key.encode())
                else:
                    h.update(b"\n" + e.key.encode())
                count += 1
                if count == shard_size:
                    records.append(ShardRecord(e.split, n, count, h.hexdigest()))
                    n, count, h = n + 1, 0, None
                open_[e.split] = (n, count, h)
        records += [ShardRecord(s, n, c, h.hexdigest()) for s, (n, c, h) in open_.items() if c]
        self.records = sorted(records, key=lambda r: (r.split, r.number))

    def tasks(self, names: set[str]) -> Iterator[ShardTask]:
        filling: dict[str, tuple[int, list]] = {}
        for batch in self.uris.batches():
            for e in batch:
                n, buf = filling.setdefault(e.split, (0, []))
                buf.append(e)
                if len(buf) == self.shard_size:
                    if Layout.shard_name(e.split, n) in names:
                        yield ShardTask(e.split, n, tuple(buf))
                    filling[e.split] = (n + 1, [])
        for split, (n, buf) in sorted(filling.items()):
            if buf and Layout.shard_name(split, n) in names:
                yield ShardTask(split, n, tuple(buf))

    def entries(self, keys: set[str]) -> dict[str, Entry]:
        return {e.key: e for batch in self.uris.batches() for e in batch if e.key in keys}


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


def recorded_order(layout: Layout) -> str | None:
    """The order an existing ``plan.json`` was cut in (``sorted`` for plans older than the
    option), or None for a new OUT."""
    if not exists(layout.plan):
        return None
    return RecordedPlan.from_bytes(read_file(layout.plan)).header.get("order", "sorted")


def check_plan(layout: Layout, header: dict, plan: ShardPlan) -> RecordedPlan:
    """Record the shard plan on the first run; refuse a resume whose plan differs.

    A shard counts as done when its index exists, so resuming with another shard size,
    preprocessing, split or a changed source would silently mix two different plans.
    """
    fresh = RecordedPlan(header, [r.to_json() for r in plan.records], [])
    if exists(layout.plan):
        old = RecordedPlan.from_bytes(read_file(layout.plan))
        header = json.loads(json.dumps(header))  # as it reads back (tuples become lists)
        if (old.header, old.shards) != (header, fresh.shards):
            diff = sorted(k for k in old.header.keys() | header.keys() if old.header.get(k) != header.get(k))
            if old.shards != fresh.shards:
                diff.append("shards")
            raise DatasetError(
                f"{layout.root} was started with another plan (differs in: {', '.join(diff)}); "
                "rerun with the original source and options to resume, or convert into a new OUT")
        return old
    atomic_write(layout.plan, fresh.to_bytes())
    return fresh


def retry_tasks(recorded: RecordedPlan, plan: ShardPlan) -> list[ShardTask]:
    """The shards of every recorded retry round, their entries looked up in the plan."""
    rounds = [s for rnd in recorded.retries for s in rnd]
    if not rounds:
        return []
    by_key = plan.entries({k for s in rounds for k in s["keys"]})
    return [ShardTask(s["split"], s["number"], tuple(by_key[k] for k in s["keys"])) for s in rounds]


def add_retry_round(layout: Layout, recorded: RecordedPlan, plan: ShardPlan,
                    keys_by_split: dict[str, list[str]], shard_size: int) -> list[ShardTask]:
    """Append a retry round for ``keys_by_split`` (new shards numbered after each split's last)
    to ``plan.json`` before anything is converted; returns the round's tasks."""
    last: dict[str, int] = {}
    for split, number in [*((r.split, r.number) for r in plan.records),
                          *((s["split"], s["number"]) for rnd in recorded.retries for s in rnd)]:
        last[split] = max(last.get(split, -1), number)
    rnd = []
    key = order_key(recorded.header.get("order", "sorted"))  # a retry round mixes as the plan does
    for split in sorted(keys_by_split):
        keys = sorted(keys_by_split[split], key=key)
        for i, start in enumerate(range(0, len(keys), shard_size)):
            rnd.append({"split": split, "number": last.get(split, -1) + 1 + i,
                        "keys": keys[start : start + shard_size]})
    updated = RecordedPlan(recorded.header, recorded.shards, [*recorded.retries, rnd])
    atomic_write(layout.plan, updated.to_bytes())
    return retry_tasks(RecordedPlan(recorded.header, recorded.shards, [rnd]), plan)
