"""Per-sample index rows and their Parquet form (per shard, merged, failures)."""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.shards.layout import read_file

OK, FAILED = "ok", "failed"


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


def to_table(rows: list[IndexRow]) -> pa.Table:
    cols = {f.name: [getattr(r, f.name) for r in rows] for f in fields(IndexRow)}
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


def read_table(url: str) -> pa.Table:
    return table_from_bytes(read_file(url))  # transient storage failures retried


def table_from_bytes(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))
