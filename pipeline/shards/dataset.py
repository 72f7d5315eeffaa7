"""A latent dataset on disk, opened: manifest, its own codec, index, random access by key."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pyarrow as pa

from pipeline.codec import checkpoint
from pipeline.codec.codec import Codec
from pipeline.codec.load import codec_from_checkpoint
from pipeline.errors import DatasetError, FingerprintMismatch
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout
from pipeline.shards.manifest import Manifest, read_manifest
from pipeline.shards.tar import read_member


@dataclass
class LatentDataset:
    layout: Layout
    manifest: Manifest

    @classmethod
    def open(cls, root: str) -> LatentDataset:
        layout = Layout.at(root)
        return cls(layout, read_manifest(layout))

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def max_pixels(self) -> int:
        """See `Manifest.max_pixels`."""
        return self.manifest.max_pixels

    def load_codec(self, other: Codec | None = None) -> Codec:
        """The dataset's own codec (from OUT/codec/), refusing any whose fingerprint differs.
        A codec loaded here parses containers up to the dataset's `max_pixels`; ``other`` is
        left as it is (pass ``max_pixels`` when decoding with it)."""
        codec = other
        if codec is None:
            codec = codec_from_checkpoint(checkpoint.read(self.layout.codec_checkpoint),
                                          f"dataset:{self.layout.root}")
            codec.max_pixels = self.max_pixels
        if codec.identity.fingerprint != self.fingerprint:
            raise FingerprintMismatch(self.fingerprint, codec.identity.fingerprint,
                                      f"dataset {self.layout.root}")
        return codec

    @cached_property
    def index(self) -> pa.Table:
        return idx.read_table(self.layout.index)

    @cached_property
    def failures(self) -> pa.Table:
        return idx.read_table(self.layout.failures)

    @cached_property
    def _tar_bytes(self) -> dict[str, int]:
        return {s.name: s.tar_bytes for s in self.manifest.shards}

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.index.column("key").to_pylist())}

    def row(self, key: str) -> dict:
        pos = self._positions.get(key)
        if pos is None:
            raise DatasetError(f"no sample with key {key!r} in {self.layout.root} "
                               "(`latents inspect` lists shards; keys are in index.parquet)")
        return self.index.slice(pos, 1).to_pylist()[0]

    def latent_bytes(self, key: str) -> bytes:
        return self.member_bytes(key, "latent")

    #: member name suffix → the index columns (offset, size) that locate it
    MEMBERS = {"latent": "latent", "json": "json", "cls": "cls", "mask.png": "mask"}

    def member_bytes(self, key: str, ext: str) -> bytes:
        """One member of a sample (``latent``, ``json``, ``cls``, ``mask.png``) by its index
        offsets: a ranged read, no scan; the tar header before it is checked."""
        if ext not in self.MEMBERS:
            raise DatasetError(f"no member kind {ext!r}; one of {', '.join(self.MEMBERS)}")
        r = self.row(key)
        col = self.MEMBERS[ext]
        if r.get(f"{col}_offset") is None:
            raise DatasetError(f"sample {key!r} has no {ext} member")
        sizes = self._tar_bytes
        if r["shard"] not in sizes:
            raise DatasetError(f"index.parquet puts {key!r} in shard {r['shard']!r}, which the manifest "
                               "does not list")
        return read_member(self.layout.shard_tar(r["shard"]), r[f"{col}_offset"], r[f"{col}_size"],
                           f"{key}.{ext}", sizes[r["shard"]])


def summarize(ds: LatentDataset) -> dict:
    """The figures `latents inspect` shows."""
    import numpy as np

    bpp = np.asarray(ds.index.column("bpp").to_pylist(), dtype=np.float64)
    reasons: dict[str, int] = {}
    for r in ds.failures.column("reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    t, m = ds.manifest.totals, ds.manifest
    pct = (lambda q: float(np.percentile(bpp, q))) if bpp.size else (lambda q: float("nan"))
    return {
        "root": ds.layout.root,
        "samples": t.samples,
        "failures": t.failures,
        "shards": len(m.shards),
        "splits": m.splits,
        "classes": len(m.classes),
        "source_bytes": t.source_bytes,
        "shard_bytes": t.shard_bytes,
        "storage_ratio": t.storage_ratio,
        "bpp_mean": t.mean_bpp,
        "bpp_p50": pct(50),
        "bpp_p95": pct(95),
        "codec": f"{m.codec['arch']} N={m.codec['N']} M={m.latent_channels} {ds.fingerprint[:16]}",
        "failures_by_reason": dict(sorted(reasons.items())),
    }
