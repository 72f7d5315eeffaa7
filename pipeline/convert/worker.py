"""The unit of conversion work: one shard, end to end (read → prepare → encode → tar → index).

An executor (``pipeline.convert.driver``) decides where shards run; this module only knows how.
A shard's figures (`ShardResult`, less nothing) go into its Parquet index's key-value metadata,
so a resume learns them from the index footer without reading the tar.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass

import numpy as np
import pyarrow as pa
import torch

from pipeline.codec.codec import Codec, EncodedLatent
from pipeline.convert.plan import Entry, ShardTask, order_key
from pipeline.errors import ConfigError, DatasetError, ImageError, Reason, redact
from pipeline.images import (
    DECODE,
    ImagePolicy,
    PreparedImage,
    class_mask,
    mask_png,
    prepare_scales,
    scale_tag,
)
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout
from pipeline.shards.lease import check_holder
from pipeline.shards.manifest import ShardEntry
from pipeline.shards.tar import TarBuilder
from pipeline.sources.base import ListingFailure, SourceItem, read_bytes
from pipeline.storage import atomic_write

READ_ERROR, MISSING, ENCODE_ERROR = Reason.READ_ERROR, Reason.MISSING, Reason.ENCODE_ERROR
#: reasons `convert --retry-failed` tries again: the storage may answer now
RETRYABLE = frozenset(r.value for r in Reason if r.retryable)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertOptions:
    policy: ImagePolicy = ImagePolicy()
    shard_size: int = 1000
    batch_size: int = 8  # images per g_a call (same padded size only)
    threads: int = 4  # image read/decode threads per shard worker
    chunk: int = 64  # images prepared at once (bounds memory)
    #: the order shards are cut in (`pipeline.convert.plan`): hashed or sorted; None: hashed
    #: for a new OUT, and on resume the order its plan.json records
    order: str | None = None

    def __post_init__(self):
        for name, v in (("--shard-size", self.shard_size), ("--batch-size", self.batch_size),
                        ("--threads", self.threads), ("chunk", self.chunk)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive whole number, got {v!r}")
        if self.order is not None:
            order_key(self.order)  # one of ORDERS, or a clear error


@dataclass(frozen=True)
class ShardResult(ShardEntry):
    """A finished shard's figures, as the manifest lists them and its index footer records them."""

    rows_sha256: str  # idx.rows_sha256 of its index rows (the file's own hash cannot sit in it)
    source_bytes: int  # of the samples that made it
    latent_bytes: int
    pixels: int  # encoded pixels (for bpp)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict) -> ShardResult:
        missing = sorted(set(cls.__dataclass_fields__) - set(d))
        if missing:
            raise DatasetError(f"shard figures lack {', '.join(missing)}")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    @classmethod
    def of(cls, task: ShardTask, table: pa.Table, tar: bytes) -> ShardResult:
        """The figures of a shard from its index table and the exact tar bytes written."""
        rows = [idx.IndexRow(**r) for r in table.to_pylist()]
        ok = [r for r in rows if r.status == idx.OK]
        return cls(task.name, task.split, len(ok), len(rows) - len(ok), len(tar),
                   hashlib.sha256(tar).hexdigest(), idx.rows_sha256(table),
                   sum(r.source_bytes for r in ok), sum(r.latent_size for r in ok),
                   sum(r.enc_h * r.enc_w for r in ok))


@dataclass(frozen=True)
class Progress:
    """Images done, failed, latent bytes and encoded pixels: what a shard reports after each
    chunk. Progress adds up (``a + b``) and subtracts (what is new since ``b``)."""

    images: int = 0
    failures: int = 0
    latent_bytes: int = 0
    pixels: int = 0

    @classmethod
    def of_row(cls, row: idx.IndexRow) -> Progress:
        if row.status == idx.FAILED:
            return cls(1, 1)
        return cls(1, 0, row.latent_size, row.enc_h * row.enc_w)

    def __add__(self, other: Progress) -> Progress:
        return Progress(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Progress) -> Progress:
        return Progress(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def bpp(self) -> float:
        return idx.bits_per_pixel(self.latent_bytes, self.pixels)


def _read(uri: str, what: str = "") -> bytes | ImageError:
    try:
        return read_bytes(uri)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        return ImageError(MISSING, f"{what}{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - any other filesystem error is this sample's failure
        return ImageError(READ_ERROR, f"{what}{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Loaded:
    """One source item read and made ready: its bytes, the prepared image (or why not), and
    the PNG of its class mask where it has one."""

    data: bytes | None
    image: PreparedImage | ImageError
    mask: bytes | None = None
    members: tuple[tuple[float, PreparedImage], ...] = ()  # the image at each of --scales


def _load(item: SourceItem, policy: ImagePolicy) -> Loaded:
    data = _read(item.uri)
    if isinstance(data, ImageError):
        return Loaded(None, data)
    try:
        img, members = prepare_scales(data, policy)
    except ImageError as exc:
        return Loaded(data, exc)
    except Exception as exc:  # noqa: BLE001 - an unforeseen decoder bug is still one sample's failure
        return Loaded(data, ImageError(DECODE, f"{type(exc).__name__}: {exc}"))
    size = json.loads(item.targets).get("size") if item.targets else None
    if size is not None and tuple(size) != (img.orig_hw[1], img.orig_hw[0]):
        return Loaded(data, ImageError(Reason.BAD_ANNOTATION, f"the annotation is for a {size[0]}x{size[1]} "
                                       f"image, the image decodes to {img.orig_hw[1]}x{img.orig_hw[0]} (EXIF "
                                       "orientation applied): its boxes and mask would not fit it"))
    if item.mask is None:
        return Loaded(data, img, None, tuple(members))

    def read_mask(uri: str) -> bytes:
        raw = _read(uri, f"its mask {redact(uri)}: ")
        if isinstance(raw, ImageError):  # a missing mask fails the sample: nothing dropped silently
            raise raw
        return raw

    try:
        return Loaded(data, img, mask_png(class_mask(item, policy, img.orig_hw, read_mask)), tuple(members))
    except ImageError as exc:
        return Loaded(data, exc)
    except Exception as exc:  # noqa: BLE001 - malformed polygons / RLE: this sample's failure
        return Loaded(data, ImageError(Reason.BAD_ANNOTATION, f"its segmentation cannot be drawn "
                                       f"({type(exc).__name__}: {exc})"))


def _encode_group(codec: Codec, imgs: list[PreparedImage]) -> list[EncodedLatent | Exception]:
    def run(batch):
        x = torch.from_numpy(np.stack([i.pixels for i in batch])).permute(0, 3, 1, 2).float().div_(255)
        return codec.encode(x, [i.enc_hw for i in batch])

    try:
        return run(imgs)
    except Exception:  # noqa: BLE001 - isolate the bad image: retry one by one
        out: list[EncodedLatent | Exception] = []
        for im in imgs:
            try:
                out += run([im])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def _encode_chunk(codec: Codec, prepared: list[PreparedImage | None], batch_size: int):
    """Containers for each prepared image (None stays None), batching equal padded sizes."""
    out: list[EncodedLatent | Exception | None] = [None] * len(prepared)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        if p is not None:
            groups.setdefault(p.padded_hw, []).append(i)
    for members in groups.values():
        for s in range(0, len(members), batch_size):
            part = members[s : s + batch_size]
            for i, res in zip(part, _encode_group(codec, [prepared[i] for i in part]), strict=True):
                out[i] = res
    return out


def _sample_json(item: SourceItem, img: PreparedImage, latent: bytes, row: idx.IndexRow) -> bytes:
    meta = {
        "key": item.key, "source": redact(item.uri), "label": item.label, "label_name": item.label_name,
        "targets": json.loads(item.targets) if item.targets else None,
        "orig_hw": list(img.orig_hw), "enc_hw": list(img.enc_hw), "padded_hw": list(img.padded_hw),
        "latent_shape": [row.latent_c, row.latent_h, row.latent_w],
        "valid_hw": [row.valid_h, row.valid_w], "source_bytes": row.source_bytes,
        "latent_bytes": len(latent), "bpp": row.bpp, "codec": row.codec_fingerprint,
        "source_mode": img.source_mode, "exif_transposed": img.exif_transposed,
    }
    if row.members:  # the extra encodings (`convert --scales`): which member, its size and grid
        meta["members"] = [{"scale": m["scale"], "member": m["member"], "enc_hw": m["enc_hw"],
                            "valid_hw": m["valid_hw"], "latent_bytes": m["size"]}
                           for m in json.loads(row.members)]
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def _failure_row(task: ShardTask, e: Entry, reason: str, etype: str, detail: str,
                 data: bytes | None = None) -> idx.IndexRow:
    return idx.IndexRow(
        key=e.key, split=task.split, shard=task.name, status=idx.FAILED, source_uri=redact(e.uri),
        reason=reason, error_type=etype, detail=redact(detail)[:500],
        source_bytes=len(data) if data is not None else None,
        source_sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
        label=getattr(e, "label", None), label_name=getattr(e, "label_name", None),
        targets=getattr(e, "targets", None), num_boxes=_num_boxes(getattr(e, "targets", None)))


def _chunks(seq: tuple, n: int) -> Iterable[tuple]:
    for s in range(0, len(seq), n):
        yield seq[s : s + n]


def convert_shard(task: ShardTask, codec: Codec, layout: Layout, opts: ConvertOptions,
                  on_progress: Callable[[Progress], None] | None = None, lease_id: str = "") -> ShardResult:
    """Convert one shard and write it atomically: tar first, its Parquet index last; with
    ``lease_id``, only while that run still holds OUT's lease (else `LeaseLost`)."""
    fp = codec.identity.fingerprint
    tar, rows = TarBuilder(), []
    pool = ThreadPoolExecutor(max(1, opts.threads))
    try:
        for chunk in _chunks(task.entries, opts.chunk):
            items = [e for e in chunk if isinstance(e, SourceItem)]
            loaded = dict(zip((i.key for i in items),
                              pool.map(lambda it: _load(it, opts.policy), items), strict=True))
            # every image, then every scale member, encoded together (equal padded sizes batch)
            jobs = [((i.key, 1.0), loaded[i.key].image) for i in items
                    if isinstance(loaded[i.key].image, PreparedImage)]
            jobs += [((i.key, s), m) for i in items for s, m in loaded[i.key].members
                     if isinstance(loaded[i.key].image, PreparedImage)]
            latents = dict(zip((k for k, _ in jobs),
                               _encode_chunk(codec, [p for _, p in jobs], opts.batch_size), strict=True))
            step = Progress()
            for e in chunk:
                row = _convert_entry(task, e, loaded, latents, tar, fp)
                rows.append(row)
                step += Progress.of_row(row)
            if on_progress:
                on_progress(step)
    finally:
        pool.shutdown()
    tar_data = tar.finish()
    table = idx.to_table(rows)
    result = ShardResult.of(task, table, tar_data)
    if lease_id:
        check_holder(layout, lease_id, f"shard {task.name}")
    atomic_write(layout.shard_tar(task.name), tar_data)
    # the index goes last: its presence marks the shard done, its footer carries the figures
    atomic_write(layout.shard_index(task.name),
                 idx.table_bytes(table, {idx.SHARD_FIGURES: result.to_json()}))
    return result


def _convert_entry(task, e: Entry, loaded, latents, tar: TarBuilder, fp: str) -> idx.IndexRow:
    if isinstance(e, ListingFailure):
        return _failure_row(task, e, e.reason, "ListingError", e.detail)
    data, img = loaded[e.key].data, loaded[e.key].image
    if isinstance(img, ImageError):
        return _failure_row(task, e, img.reason, "ImageError", img.detail, data)
    encoded = latents[(e.key, 1.0)]
    if isinstance(encoded, Exception):
        return _failure_row(task, e, ENCODE_ERROR, type(encoded).__name__, str(encoded), data)
    head, latent = encoded.container, encoded.data
    (c, lh, lw), (vh, vw) = head.y_shape, head.valid_hw
    m_lat = tar.add(f"{e.key}.latent", latent)
    members = []
    for s, m in loaded[e.key].members:
        extra = latents[(e.key, s)]
        if isinstance(extra, Exception):  # the image itself made it: only this member is missing
            log.warning("%s: its %s encoding failed (%s: %s) and is left out; the loader draws the "
                        "image itself in its place", e.key, scale_tag(s), type(extra).__name__, extra)
            continue
        entry = tar.add(f"{e.key}.{scale_tag(s)}", extra.data)
        members.append({"scale": s, "member": scale_tag(s), "offset": entry.offset, "size": entry.size,
                        "enc_hw": list(m.enc_hw), "valid_hw": list(extra.container.valid_hw)})
    row = idx.IndexRow(
        key=e.key, split=task.split, shard=task.name, status=idx.OK, source_uri=redact(e.uri),
        source_bytes=len(data), source_sha256=hashlib.sha256(data).hexdigest(),
        label=e.label, label_name=e.label_name, targets=e.targets, num_boxes=_num_boxes(e.targets),
        orig_h=img.orig_hw[0], orig_w=img.orig_hw[1],
        enc_h=img.enc_hw[0], enc_w=img.enc_hw[1], padded_h=img.padded_hw[0],
        padded_w=img.padded_hw[1], latent_c=c, latent_h=lh, latent_w=lw, valid_h=vh, valid_w=vw,
        latent_offset=m_lat.offset, latent_size=m_lat.size,
        bpp=idx.bits_per_pixel(len(latent), img.enc_hw[0] * img.enc_hw[1]),
        codec_fingerprint=fp, source_mode=img.source_mode, exif_transposed=img.exif_transposed,
        members=json.dumps(members, separators=(",", ":")) if members else None)
    m_json = tar.add(f"{e.key}.json", _sample_json(e, img, latent, row))
    m_cls = tar.add(f"{e.key}.cls", str(e.label).encode()) if e.label is not None else None
    mask = loaded[e.key].mask
    m_mask = tar.add(f"{e.key}.mask.png", mask) if mask is not None else None
    return dataclasses.replace(
        row, json_offset=m_json.offset, json_size=m_json.size,
        cls_offset=m_cls.offset if m_cls else None, cls_size=m_cls.size if m_cls else None,
        mask_offset=m_mask.offset if m_mask else None, mask_size=m_mask.size if m_mask else None)


def _num_boxes(targets: str | None) -> int | None:
    """How many boxes a sample's targets hold (None where the source has no boxes)."""
    if not targets:
        return None
    boxes = json.loads(targets).get("boxes")
    return None if boxes is None else len(boxes)
