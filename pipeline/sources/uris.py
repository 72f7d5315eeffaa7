"""A list of URIs: a CSV or Parquet file (or a folder of them) with a ``uri`` column.

Optional columns: ``label`` (class name or integer index), ``key`` (else derived from the
URI's file name), ``split`` (else the --split option, else ``train``). Relative paths are
relative to the list file's folder. URIs may be local, s3://, gs://, http(s)://, …

Lists of tens of millions of rows are never held whole: `UriList.scan` reads the list once
in record batches to learn its splits, classes and which keys collide (64-bit hashes, 8 bytes
a row), and `UriList.batches` reads it again, batch by batch, as `SourceItem` objects. The
shard plan follows the list's own order (`pipeline.convert.plan.UriListPlan`).

Keys: the ``key`` column or the file name (`make_key`) of the URL's path alone (`key_path`:
no userinfo, query or fragment, so a token never reaches a key); a key that is not tar-safe,
or that two rows share, gets a short hash of that path appended (``-<sha1[:8]>``), and the
same path listed again (with another query, or none) gets ``-1``, ``-2``, … after that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import SourceError
from pipeline.names import SPLIT_NAME
from pipeline.sources.base import Listing, SourceItem, canonical_uri, make_key, split_listing

BATCH_ROWS = 65_536
LIST_SUFFIXES = (".parquet", ".csv")
_INT = re.compile(r"-?\d+")
_COLUMNS = ("uri", "key", "split", "label")


def _list_files(root: str) -> tuple[str, ...]:
    """The list itself, or every .parquet/.csv file under a folder, in name order."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.isdir(path):
        return (root,)
    proto = root.split("://", 1)[0] + "://" if "://" in root else ""
    files = tuple(proto + p for p in sorted(fs.find(path)) if p.lower().endswith(LIST_SUFFIXES))
    if not files:
        raise SourceError(f"{root} holds no .parquet or .csv URI list")
    return files


def _open_batches(uri: str) -> Iterator[dict[str, list]]:
    """Record batches of one list file as columns of Python values (strings for CSV).

    Arrow reads the Python file on this thread only (no pre-buffering, no decode threads) and
    is closed before the file: no Arrow pool thread may hold the file after a failing run
    (the abort at exit that `pipeline.shards.index.table_from_bytes` fixed for indices)."""
    with fsspec.open(uri, "rb") as f:
        if uri.lower().endswith(".parquet"):
            with pq.ParquetFile(f, pre_buffer=False) as pf:
                names = pf.schema_arrow.names
                if "uri" not in names:
                    raise SourceError(f"{uri} has no 'uri' column (columns: {', '.join(names)})")
                cols = [c for c in _COLUMNS if c in names]
                for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols, use_threads=False):
                    yield b.to_pydict()
        else:
            types = {c: pa.string() for c in _COLUMNS}
            reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
                                    convert_options=pacsv.ConvertOptions(column_types=types,
                                                                         strings_can_be_null=True))
            names = reader.schema.names
            if "uri" not in names:
                raise SourceError(f"{uri} has no 'uri' column (columns: {', '.join(names)})")
            for b in reader:
                d = b.to_pydict()
                yield {c: d[c] for c in _COLUMNS if c in d}


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)


def _resolve(uri: str, folder: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return f"{folder}/{uri}"


def key_path(uri: str) -> str:
    """What a key may be made of: a URL's scheme, host and path, never its userinfo, query or
    fragment (presigned URLs carry tokens and signatures there, and they change from one
    signing to the next). Paths without a scheme are file names and keep every character."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # a malformed host ('http://[::1'): cut at the first query or fragment mark
        return re.split(r"[?#]", uri, maxsplit=1)[0]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def _base_key(uri: str, key) -> str:
    return str(key) if key else make_key(key_path(uri).rsplit("/", 1)[-1])


@dataclass(frozen=True)
class UriList:
    """A scanned URI list: its files, row count, splits, classes and colliding keys."""

    root: str
    files: tuple[str, ...]
    rows: int
    split_counts: dict[str, int]
    classes: tuple[str, ...]  # sorted label names; () when labels are integer indices
    clashes: np.ndarray  # sorted 64-bit hashes of base keys that more than one row has
    default_split: str

    @classmethod
    def scan(cls, root: str, split: str | None = None) -> UriList:
        """One pass over the list: nothing but counts, label names and key hashes is kept."""
        root = canonical_uri(root)
        files = _list_files(root)
        default = split or "train"
        hashes, splits, names, ints, rows = [], {}, set(), True, 0
        for _, folder, cols in cls._file_batches(files):
            n = len(cols["uri"])
            rows += n
            keys = cols.get("key") or [None] * n
            hashes.append(np.fromiter((_key_hash(_base_key(_resolve(str(u), folder), k))
                                       for u, k in zip(cols["uri"], keys, strict=True)), np.int64, n))
            for s in cols.get("split") or [None] * n:
                s = str(s or default)
                splits[s] = splits.get(s, 0) + 1
            for v in cols.get("label") or ():
                if v is not None:
                    names.add(str(v))
                    ints = ints and (isinstance(v, int) or bool(_INT.fullmatch(str(v))))
        bad = sorted(s for s in splits if not SPLIT_NAME.fullmatch(s))
        if bad:
            raise SourceError(f"{root}: split {bad[0]!r} cannot name a shard; splits use letters, digits, "
                              "_ and - (at most 64)")
        if split:
            splits = {split: splits[split]} if split in splits else {}
        allh = np.concatenate(hashes) if hashes else np.zeros(0, np.int64)
        del hashes
        allh.sort()  # in place: a 10 M-row list costs its 80 MB of hashes, not copies of them
        clashes = np.unique(allh[1:][allh[1:] == allh[:-1]])
        return cls(root, files, rows, dict(sorted(splits.items())), () if ints else tuple(sorted(names)),
                   clashes, default)

    @staticmethod
    def _file_batches(files: tuple[str, ...]) -> Iterator[tuple[str, str, dict[str, list]]]:
        for file in files:
            folder = file.rsplit("/", 1)[0]
            for cols in _open_batches(file):
                yield file, folder, cols

    def batches(self) -> Iterator[list[SourceItem]]:
        """Every row as a `SourceItem`, in list order, one record batch at a time (rows of
        splits other than the one asked for are left out)."""
        index = {c: i for i, c in enumerate(self.classes)}
        repeats: dict[str, int] = {}
        for _, folder, cols in self._file_batches(self.files):
            n = len(cols["uri"])
            keys, splits, labels = (cols.get(c) or [None] * n for c in ("key", "split", "label"))
            out = []
            for u, k, s, v in zip(cols["uri"], keys, splits, labels, strict=True):
                s = str(s or self.default_split)
                if s not in self.split_counts:
                    continue
                uri = _resolve(str(u), folder)
                base = _base_key(uri, k)
                key = base
                clash = bool(self.clashes.size) and self._clashes(base)
                if clash or make_key(base) != base:
                    key = f"{make_key(base)}-{hashlib.sha1(key_path(uri).encode()).hexdigest()[:8]}"
                if clash:  # the same path listed again (with another query, or none)
                    seen = repeats.get(key, 0)
                    repeats[key] = seen + 1
                    key = f"{key}-{seen}" if seen else key
                label = None if v is None else (index[str(v)] if self.classes else int(v))
                out.append(SourceItem(key, uri, s, label, str(v) if self.classes and v is not None else None))
            yield out

    def _clashes(self, base: str) -> bool:
        h = _key_hash(base)
        i = int(np.searchsorted(self.clashes, h))
        return i < self.clashes.size and int(self.clashes[i]) == h


def list_uris(root: str, split: str | None = None) -> Listing:
    """The whole list in memory, sorted by (split, key): for small lists and inspection.
    Conversion plans lists by streaming them instead (`UriList`)."""
    scan = UriList.scan(root, split)
    return split_listing([i for b in scan.batches() for i in b], [], scan.classes)
