"""Per-sample index rows and their Parquet form (per shard, merged, failures)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, fields

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DatasetError
from pipeline.storage import read_file, with_retries

OK, FAILED = "ok", "failed"
#: Key-value metadata key of a per-shard index: the shard's figures (ShardResult) as JSON.
SHARD_FIGURES = "latent_shards.shard"
_FOOTER_TAIL = 8 * 1024  # one ranged read covers a shard index's footer (about 4 KB)


@dataclass(frozen=True)
class IndexRow:
    key: str
    split: str
    shard: str
    status: str  # "ok" | "failed"
    source_uri: str
    reason: str | None = None  # stable failure reason (see pipeline.images)
    error_type: str | None = None
    detail: str | None = None
    source_bytes: int | None = None
    source_sha256: str | None = None
    label: int | None = None
    label_name: str | None = None
    targets: str | None = None  # JSON: multi-label positives/negatives, boxes (normalised xyxy)
    orig_h: int | None = None
    orig_w: int | None = None
    enc_h: int | None = None  # the image the codec saw, before padding
    enc_w: int | None = None
    padded_h: int | None = None
    padded_w: int | None = None
    latent_c: int | None = None  # y grid over the padded image
    latent_h: int | None = None
    latent_w: int | None = None
    valid_h: int | None = None  # part of the y grid over real pixels
    valid_w: int | None = None
    latent_offset: int | None = None  # byte offset of KEY.latent's data in the tar
    latent_size: int | None = None
    json_offset: int | None = None
    json_size: int | None = None
    cls_offset: int | None = None
    cls_size: int | None = None
    bpp: float | None = None  # 8 · latent bytes / (enc_h · enc_w)
    codec_fingerprint: str | None = None
    source_mode: str | None = None
    exif_transposed: bool | None = None
    # added with detection and segmentation sources; indices written before lack them
    num_boxes: int | None = None  # boxes in ``targets`` (None: the source has no boxes)
    mask_offset: int | None = None  # KEY.mask.png, where the source has a class mask
    mask_size: int | None = None
    # added with `convert --scales`: JSON list of the image's extra encodings, each
    # {"scale", "member", "offset", "size", "enc_hw", "valid_hw"} (None: none were made)
    members: str | None = None


# Field annotations are strings ("int | None"): their first word names the Arrow type.
_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_REQUIRED = ("key", "split", "shard", "status", "source_uri")
SCHEMA = pa.schema([
    pa.field(f.name, _TYPES[str(f.type).split(" |")[0]], nullable=f.name not in _REQUIRED)
    for f in fields(IndexRow)
])


def bits_per_pixel(nbytes: int, pixels: int) -> float:
    """The one bpp formula: 8 · bytes ÷ pixels of the encoded image (0 for no pixels)."""
    return 8 * nbytes / pixels if pixels else 0.0


#: columns written only when some row has a value, so datasets without them keep the bytes
#: they had before the column existed (readers see a missing column as nulls: `concat`)
OPTIONAL = ("members",)


def to_table(rows: list[IndexRow]) -> pa.Table:
    cols = {f.name: [getattr(r, f.name) for r in rows] for f in fields(IndexRow)}
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    for name in OPTIONAL:
        if rows and all(v is None for v in cols[name]):
            table = table.drop_columns([name])
    return table


def table_bytes(table: pa.Table, metadata: dict[str, dict] | None = None) -> bytes:
    """Parquet bytes of ``table``; ``metadata`` (name → JSON object) goes into its footer.

    The Arrow schema is not stored beside the Parquet one (every column type here maps back
    as is), which keeps a shard index's footer at a few KB: that is what a resume reads.
    """
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, table.schema.remove_metadata(), compression="zstd",
                          write_statistics=True, store_schema=False) as w:
        w.write_table(table.replace_schema_metadata(None))
        if metadata:
            w.add_key_value_metadata(
                {k: json.dumps(v, sort_keys=True, separators=(",", ":")) for k, v in metadata.items()})
    return buf.getvalue()


def concat(tables: list[pa.Table]) -> pa.Table:
    """Index tables as one, in order; one written before a column was added reads it as null."""
    return pa.concat_tables(tables, promote_options="default") if tables else to_table([])


def latest_rows(table: pa.Table) -> pa.Table:
    """``table`` with one row per key: the last (a key retried by `convert --retry-failed` in
    a later shard keeps only its latest row); unchanged when every key is unique."""
    keys = table["key"].to_pylist()
    latest = {k: i for i, k in enumerate(keys)}
    return table if len(latest) == len(keys) else table.take(sorted(latest.values()))


def rows_sha256(table: pa.Table) -> str:
    """SHA-256 of an index's rows in canonical JSON: what the manifest pins for each shard.

    The file's own hash cannot be recorded inside its footer, so the rows are hashed instead;
    ``verify`` recomputes it from the rows it reads.
    """
    rows = table.replace_schema_metadata(None).to_pylist()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def footer_metadata(url: str) -> dict[str, dict]:
    """The JSON key-value metadata of a Parquet file, read from its footer alone (one ranged
    read of the file's tail, two where the footer is longer): never the row data."""
    def once() -> dict[str, dict]:
        fs, path = fsspec.core.url_to_fs(url)
        size = fs.size(path)
        tail = fs.cat_file(path, start=max(0, size - _FOOTER_TAIL), end=size)
        if len(tail) < 12 or tail[-4:] != b"PAR1":
            raise DatasetError(f"{url} is not a Parquet file (no PAR1 footer)")
        need = int.from_bytes(tail[-8:-4], "little") + 8
        if need > len(tail):
            if need + 4 > size:
                raise DatasetError(f"{url}: Parquet footer length {need} exceeds the file")
            tail = fs.cat_file(path, start=size - need, end=size)
        meta = pq.read_metadata(io.BytesIO(b"PAR1" + tail[-need:])).metadata or {}
        return {k.decode(): json.loads(v) for k, v in meta.items() if k.decode().startswith("latent_shards.")}

    return with_retries(once, f"reading the footer of {url}")


def read_table(url: str) -> pa.Table:
    return table_from_bytes(read_file(url))  # transient storage failures retried


def table_from_bytes(data: bytes) -> pa.Table:
    """The rows of a Parquet index (footer metadata is not part of the table).

    Read in this thread alone (no pre-buffering, no decoding threads), by a `pq.ParquetFile`
    closed before this returns. Not `pq.read_table`: its dataset scanner leaves an Arrow pool
    thread to drop the file (a Python object) some time after the call returns; in interpreter
    shutdown that thread cannot take the GIL, and a good run aborts at exit (134, "terminate
    called without an active exception"). Nor a `pa.BufferReader` over ``data``: its pages
    would be slices of Python memory, which Arrow threads then release. A BytesIO is copied.
    """
    with pq.ParquetFile(io.BytesIO(data), pre_buffer=False) as f:
        return f.read(use_threads=False).replace_schema_metadata(None)
