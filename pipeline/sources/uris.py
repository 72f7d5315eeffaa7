"""A list of URIs: a CSV or Parquet file with a ``uri`` column (local, s3://, gs://, http(s)://).

Optional columns: ``label`` (class name or integer index), ``key`` (else derived from the
URI), ``split`` (else the --split option). Relative paths are relative to the list's folder.
"""

from __future__ import annotations

import hashlib
import io

import fsspec
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import DatasetError
from pipeline.sources.base import Listing, SourceItem, canonical_uri, make_key, split_listing


def _read_table(uri: str):
    with fsspec.open(uri, "rb") as f:
        data = f.read()
    if uri.lower().endswith(".parquet"):
        return pq.read_table(io.BytesIO(data))
    return pacsv.read_csv(io.BytesIO(data))


def _resolve(uri: str, folder: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return f"{folder}/{uri}"


def list_uris(root: str, split: str | None = None) -> Listing:
    root = canonical_uri(root)
    table = _read_table(root)
    if "uri" not in table.column_names:
        raise DatasetError(f"{root} has no 'uri' column (columns: {', '.join(table.column_names)})")
    rows = table.to_pylist()
    folder = root.rsplit("/", 1)[0]
    labels = [r.get("label") for r in rows]
    named = any(isinstance(v, str) for v in labels)
    classes = tuple(sorted({str(v) for v in labels if v is not None})) if named else ()
    index = {c: i for i, c in enumerate(classes)}
    items, seen = [], {}
    for r in rows:
        uri = _resolve(str(r["uri"]), folder)
        key = str(r["key"]) if r.get("key") else make_key(uri.rsplit("/", 1)[-1])
        if key in seen or make_key(key) != key:
            key = f"{make_key(key)}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}"
        base, n = key, 1
        while key in seen:  # the same URI listed again
            key, n = f"{base}-{n}", n + 1
        seen[key] = uri
        v = r.get("label")
        label = None if v is None else (index[str(v)] if named else int(v))
        items.append(SourceItem(key, uri, str(r.get("split") or split or "train"), label,
                                str(v) if named and v is not None else None))
    return split_listing(items, [], classes)
