"""The warm decoded-latent cache: ŷ decoded once, read back at near-memcpy speed.

Entropy decoding ŷ costs milliseconds per sample (the float64 hyper-synthesis dominates);
reading it back from a local cache costs tens of microseconds. The first epoch fills the
cache as a side effect of decoding; later epochs read it instead of the tar shards.

* **Local and per dataset.** One SQLite file per dataset, under ``root/<sha of the dataset
  URL>/``, safe for many DataLoader workers and ranks of one machine at once (WAL mode, one
  connection per process).
* **Exact.** What comes back is the decoder's ŷ, bit for bit: integer-valued ŷ (the
  zero-mean hyperprior) is stored as int8/int16 symbols; ŷ with means (mean-scale
  hyperprior, factorized medians) as its float32 bytes, byte-shuffled. Either way zstd
  compresses the bytes.
* **Keyed by what decides the bytes.** Rows are keyed by the shard's sha256 (from the
  manifest) and the sample's position, so a rewritten shard misses instead of returning stale
  latents; the file records the codec fingerprint, and opening it with another fingerprint
  empties it (logged) before use.
* **Bounded.** The compressed payload never exceeds ``max_bytes``. Once full, new samples
  are not admitted: under a shuffled scan of the whole dataset every epoch, least-recently-used
  eviction would throw out exactly the shards needed next and hit almost never, while a fixed
  subset hits ``max_bytes`` ÷ (dataset's cached size) of the time with no churn. Eviction
  removes what can no longer be used: shards that left the dataset's manifest (rewritten or
  removed) when the cache is opened, and least-recently-used shards when it is opened with a
  lower limit.
* **Self-healing.** A damaged row (it fails to decompress) is deleted and its sample is
  decoded from the tar again, like a miss.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline.errors import LatentShardsError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: Storage kinds of one cached ŷ.
INT8, INT16, FLOAT32 = 1, 2, 3
_DTYPES = {INT8: np.int8, INT16: np.int16, FLOAT32: np.float32}
_INHERITED: list[sqlite3.Connection] = []
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS latents (
    shard TEXT NOT NULL, pos INTEGER NOT NULL, key TEXT NOT NULL, target INTEGER NOT NULL,
    kind INTEGER NOT NULL, c INTEGER NOT NULL, h INTEGER NOT NULL, w INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (shard, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (shard TEXT PRIMARY KEY, bytes INTEGER NOT NULL, used REAL NOT NULL);
"""


def pack_latent(y: torch.Tensor, level: int = 1) -> tuple[int, bytes]:
    """(kind, zstd bytes) of a float32 ŷ ``[C, H, W]``, exactly recoverable by ``unpack_latent``."""
    a = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.float32)
    r = np.rint(a)
    if a.size and np.array_equal(a, r) and not np.signbit(a[a == 0]).any():  # -0.0 would lose its sign
        lo, hi = float(r.min()), float(r.max())
        if -128 <= lo and hi <= 127:
            kind, raw = INT8, r.astype(np.int8).tobytes()
        elif -32768 <= lo and hi <= 32767:
            kind, raw = INT16, r.astype(np.int16).tobytes()
        else:
            kind, raw = FLOAT32, _shuffle(a)
    else:
        kind, raw = FLOAT32, _shuffle(a)
    return kind, _zstd(level).compress(raw, asbytes=True)


def unpack_latent(kind: int, shape: tuple[int, int, int], data: bytes) -> torch.Tensor:
    dtype = np.dtype(_DTYPES[kind])
    n = int(np.prod(shape))
    raw = np.frombuffer(_zstd(1).decompress(data, decompressed_size=n * dtype.itemsize, asbytes=True),
                        dtype=np.uint8)
    if kind == FLOAT32:
        a = raw.reshape(4, n).T.copy().view(np.float32)
    else:
        a = raw.view(dtype).astype(np.float32)
    return torch.from_numpy(a.reshape(shape))


@functools.cache
def _zstd(level: int) -> pa.Codec:
    return pa.Codec("zstd", compression_level=level)


def _shuffle(a: np.ndarray) -> bytes:
    """float32 bytes grouped by significance (sign/exponent bytes together): zstd likes that."""
    return a.reshape(-1).view(np.uint8).reshape(-1, 4).T.tobytes()


@dataclass(frozen=True)
class CachedSample:
    pos: int
    key: str
    target: int | bytes  # the class index, or a detection/segmentation payload (loader.targets)
    y_hat: torch.Tensor


class LatentCache:
    """Decoded ŷ of one dataset under one codec fingerprint (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, dataset_url: str, fingerprint: str,
                 max_bytes: int = 20 * 2**30, level: int = 1):
        if max_bytes <= 0:
            raise LatentShardsError(f"cache size limit must be positive, got {max_bytes}")
        self.dir = Path(root).expanduser() / hashlib.sha256(dataset_url.encode()).hexdigest()[:16]
        self.path = self.dir / "latents.sqlite"
        self.dataset_url, self.fingerprint = dataset_url, fingerprint
        self.max_bytes, self.level = int(max_bytes), level
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._full_logged = False

    @classmethod
    def for_dataset(cls, root: str | os.PathLike, data, max_bytes: int = 20 * 2**30,
                    target: str = "class") -> LatentCache:
        """The cache under ``root`` of an opened ``LatentDataset``: keyed by its location (local
        paths made absolute), its codec fingerprint and the kind of target it keeps beside ŷ
        (class indices, or detection / segmentation payloads: one cache file each)."""
        url = data.layout.root
        url = url if "://" in url else os.path.abspath(url)
        return cls(root, url if target == "class" else f"{url}#{target}", data.fingerprint, max_bytes)

    # -- connection (one per process: DataLoader workers are forked) --------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid != os.getpid():
            # A connection inherited through fork must not be used, nor closed, by the child:
            # keep it referenced so that garbage collection never closes it here.
            _INHERITED.append(self._conn)
            self._conn = None
        if self._conn is None:
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def prepare(self, shards: Iterable[str] | None = None) -> None:
        """Create (or check and maybe reset) the file now, in this process, then close it, so
        DataLoader workers started afterwards find it ready instead of racing to create it.

        ``shards``: the sha256 of every shard the dataset has now; cached shards not among
        them are evicted. Least-recently-used shards go too while the payload exceeds the limit.
        """
        c = self.conn
        with self._write():
            held = [r[0] for r in c.execute("SELECT shard FROM shards").fetchall()]
            keep = set(shards) if shards is not None else set(held)
            for sha in held:
                if sha not in keep:
                    self._drop(sha)
            total = self._total()
            for sha, size in c.execute("SELECT shard, bytes FROM shards ORDER BY used").fetchall():
                if total <= self.max_bytes:
                    break
                self._drop(sha)
                total -= size
        self.close()

    def _open(self) -> sqlite3.Connection:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=300, isolation_level=None)
            for attempt in range(600):  # switching to WAL takes the lock without waiting on it
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 599:
                        raise
                    time.sleep(0.1)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LatentShardsError(f"latent cache {self.path}: {exc} (pass another cache "
                                    "directory, on a local disk, or run without the cache)") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")  # one process at a time checks (and maybe resets) it
            meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            want = {"version": str(CACHE_VERSION), "fingerprint": self.fingerprint,
                    "dataset": self.dataset_url}
            if meta != want:
                if meta:
                    log.warning("latent cache %s invalidated: it held %s, now %s", self.path,
                                {k: meta.get(k) for k in want}, want)
                conn.execute("DELETE FROM latents")
                conn.execute("DELETE FROM shards")
                conn.execute("DELETE FROM meta")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(want.items()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LatentShardsError(f"latent cache {self.path}: {exc} (another process holds it "
                                    "locked; pass another cache directory or retry)") from exc
        return conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- reads and writes ---------------------------------------------------------------------
    def positions(self, shard: str, start: int, stop: int) -> set[int]:
        """Positions in [start, stop) of ``shard`` (by its sha256) that the cache holds."""
        rows = self.conn.execute("SELECT pos FROM latents WHERE shard = ? AND pos >= ? AND pos < ?",
                                 (shard, start, stop)).fetchall()
        if rows:
            self.conn.execute("UPDATE shards SET used = ? WHERE shard = ?", (time.time(), shard))
        return {r[0] for r in rows}

    _COLUMNS = "pos, key, target, kind, c, h, w, data"

    def read(self, shard: str, start: int, stop: int) -> Iterator[CachedSample]:
        """The cached samples in [start, stop), in position order, unpacked one at a time.

        Rows are fetched a few at a time by position ranges: no read stays open across yields."""
        for lo in range(start, stop, 32):
            rows = self.conn.execute(f"SELECT {self._COLUMNS} FROM latents WHERE shard = ? AND pos >= ? "
                                     "AND pos < ? ORDER BY pos", (shard, lo, min(stop, lo + 32))).fetchall()
            for row in rows:
                if (sample := self._unpack(shard, row)) is not None:
                    yield sample

    def read_one(self, shard: str, pos: int) -> CachedSample | None:
        row = self.conn.execute(f"SELECT {self._COLUMNS} FROM latents WHERE shard = ? AND pos = ?",
                                (shard, pos)).fetchone()
        return None if row is None else self._unpack(shard, row)

    def _unpack(self, shard: str, row: tuple) -> CachedSample | None:
        pos, key, target, kind, c, h, w, data = row
        try:
            return CachedSample(pos, key, target, unpack_latent(kind, (c, h, w), data))
        except Exception as exc:  # noqa: BLE001 - a damaged row is a miss, not a failed epoch
            log.warning("latent cache %s: dropping damaged row (shard %s, position %d): %s",
                        self.path, shard, pos, exc)
            c = self.conn
            with self._write():
                if c.execute("DELETE FROM latents WHERE shard = ? AND pos = ?", (shard, pos)).rowcount:
                    c.execute("UPDATE shards SET bytes = bytes - ? WHERE shard = ?", (len(data), shard))
            return None

    def put(self, shard: str, samples: list[CachedSample]) -> int:
        """Store decoded samples of ``shard`` while the payload stays within the limit; returns
        how many were stored (once full, new samples are not admitted: see the module doc)."""
        if not samples or self._total() >= self.max_bytes:  # full: not even compressed
            return 0
        rows = []
        for s in samples:
            kind, data = pack_latent(s.y_hat, self.level)
            rows.append((shard, s.pos, s.key, s.target, kind, *s.y_hat.shape, data))
        c = self.conn
        stored = 0
        with self._write():
            total, added = self._total(), 0
            for r in rows:
                if total + added + len(r[-1]) > self.max_bytes:
                    if not self._full_logged:
                        log.info("latent cache %s is full (%d bytes): later samples are decoded every epoch",
                                 self.path, self.max_bytes)
                        self._full_logged = True
                    break
                if c.execute("INSERT OR IGNORE INTO latents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", r).rowcount:
                    added += len(r[-1])
                    stored += 1
            if stored:
                c.execute("INSERT INTO shards VALUES (?, ?, ?) ON CONFLICT(shard) DO UPDATE SET "
                          "bytes = bytes + excluded.bytes, used = excluded.used", (shard, added, time.time()))
        return stored

    @contextlib.contextmanager
    def _write(self):
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _total(self) -> int:
        return self.conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM shards").fetchone()[0]

    def _drop(self, shard: str) -> None:
        self.conn.execute("DELETE FROM latents WHERE shard = ?", (shard,))
        self.conn.execute("DELETE FROM shards WHERE shard = ?", (shard,))

    def stats(self) -> dict:
        samples, shards, payload = self.conn.execute(
            "SELECT (SELECT COUNT(*) FROM latents), (SELECT COUNT(*) FROM shards), "
            "(SELECT COALESCE(SUM(bytes), 0) FROM shards)").fetchone()
        return {"path": str(self.path), "samples": samples, "shards": shards, "bytes": payload,
                "max_bytes": self.max_bytes, "fingerprint": self.fingerprint}

    def __getstate__(self):  # picklable into DataLoader workers; each opens its own connection
        return {**self.__dict__, "_conn": None, "_pid": None}
