"""manifest.json and the merged indices: written once all shards are done."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import __version__
from pipeline.codec.container import MAX_PIXELS
from pipeline.errors import DatasetError
from pipeline.shards import index as idx
from pipeline.shards.layout import FORMAT_VERSION, Layout, check_shard_name
from pipeline.storage import atomic_write, read_file

FORMAT = "latent-shards"


@dataclass(frozen=True)
class RunInfo:
    """What a conversion records about how it was asked for (deterministic: no clock)."""

    command: tuple[str, ...]
    source_uri: str
    source_format: str
    classes: tuple[str, ...]
    preprocessing: dict
    codec: dict
    codec_checkpoint_sha256: str


def merge_indices(layout: Layout, shard_names: list[str]) -> tuple[pa.Table, pa.Table]:
    """Concatenate per-shard indices in plan order; write index.parquet and failures.parquet.

    A key retried by a later shard (``convert --retry-failed``) keeps only its latest row: a
    failure that now converts leaves the ledger, one that failed again stays once.
    """
    tables = [idx.read_table(layout.shard_index(n)) for n in shard_names]
    table = idx.latest_rows(idx.concat(tables))
    ok = table.filter(pc.equal(table["status"], idx.OK))
    failed = table.filter(pc.equal(table["status"], idx.FAILED))
    atomic_write(layout.index, idx.table_bytes(ok))
    atomic_write(layout.failures, idx.table_bytes(failed))
    return ok, failed


def build_manifest(run: RunInfo, shards: list[dict], failed: pa.Table) -> dict:
    """The manifest of ``shards``; failures are counted from the merged ledger ``failed``,
    where a retried key counts once."""
    failures_by_split = _counts(failed.column("split").to_pylist())
    splits: dict[str, dict] = {}
    for s in shards:
        d = splits.setdefault(s["split"], {"samples": 0, "failures": 0, "shards": 0})
        d["samples"] += s["samples"]
        d["failures"] = failures_by_split.get(s["split"], 0)
        d["shards"] += 1
    samples = sum(s["samples"] for s in shards)
    src, tar = sum(s["source_bytes"] for s in shards), sum(s["tar_bytes"] for s in shards)
    latent, pixels = sum(s["latent_bytes"] for s in shards), sum(s["pixels"] for s in shards)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": {"name": "latent-shards", "version": __version__},
        "command": list(run.command),
        "source": {"uri": run.source_uri, "format": run.source_format},
        "codec": run.codec,
        "codec_checkpoint": {"path": "codec/codec.pt", "sha256": run.codec_checkpoint_sha256},
        "preprocessing": run.preprocessing,
        "classes": list(run.classes),
        "splits": splits,
        "totals": {
            "samples": samples,
            "failures": failed.num_rows,
            "failures_by_reason": _counts(failed.column("reason").to_pylist()),
            "source_bytes": src,
            "shard_bytes": tar,
            "latent_bytes": latent,
            "storage_ratio": round(src / tar, 4) if tar else None,
            "mean_bpp": round(idx.bits_per_pixel(latent, pixels), 5) if pixels else None,
        },
        "shards": shards,
    }


def _counts(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in sorted(values):
        out[v] = out.get(v, 0) + 1
    return out


def write_manifest(layout: Layout, manifest: dict) -> None:
    atomic_write(layout.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class ShardEntry:
    """A shard's name, counts and tar: what every manifest entry holds (the converter's
    `ShardResult` adds its figures)."""

    name: str
    split: str
    samples: int
    failures: int
    tar_bytes: int
    tar_sha256: str


@dataclass(frozen=True)
class ListedShard(ShardEntry):
    """One shard as a manifest read back lists it (checked by `read_manifest`)."""

    rows_sha256: str | None = None  # the shard index's rows (older datasets: index_sha256)
    index_sha256: str | None = None


@dataclass(frozen=True)
class Totals:
    samples: int
    failures: int
    failures_by_reason: dict[str, int]
    source_bytes: int
    shard_bytes: int
    latent_bytes: int
    storage_ratio: float | None
    mean_bpp: float | None


@dataclass(frozen=True, eq=False)
class Manifest:
    """``manifest.json`` read once, its parts typed: what every reader of a dataset uses.

    ``raw`` is the object as written (for tools that want a field not named here).
    """

    raw: dict[str, Any]
    classes: tuple[str, ...]
    splits: dict[str, dict[str, int]]  # split → {"samples", "failures", "shards"}
    shards: tuple[ListedShard, ...]
    totals: Totals
    codec: dict[str, Any]  # the codec's identity: arch, N, M, fingerprint, …
    codec_checkpoint_sha256: str
    preprocessing: dict[str, Any]

    @classmethod
    def from_json(cls, m: dict, where: str = "manifest.json") -> Manifest:
        try:
            shards = tuple(ListedShard(s["name"], s["split"], s["samples"], s["failures"], s["tar_bytes"],
                                      s["tar_sha256"], s.get("rows_sha256"), s.get("index_sha256"))
                           for s in m["shards"])
            t = m["totals"]
            # figures added over time are optional: a dataset of this format version from an
            # earlier latent-shards lacks some
            totals = Totals(t["samples"], t["failures"], dict(t.get("failures_by_reason") or {}),
                            t.get("source_bytes", 0), t.get("shard_bytes", 0), t.get("latent_bytes", 0),
                            t.get("storage_ratio"), t.get("mean_bpp"))
            return cls(m, tuple(m["classes"]), dict(m["splits"]), shards, totals,
                       dict(m["codec"]), m["codec_checkpoint"]["sha256"], dict(m.get("preprocessing") or {}))
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{where} lacks {e} or holds it in another shape; re-convert the "
                               "dataset with this latent-shards") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.raw == other.raw

    @property
    def fingerprint(self) -> str:
        return self.codec["fingerprint"]

    @property
    def source_format(self) -> str | None:
        return (self.raw.get("source") or {}).get("format")

    @property
    def shard_order(self) -> str:
        """The order its shards were cut in (`pipeline.convert.plan`): ``hashed``, ``sorted``
        (on request, and every dataset made before the option), or ``listed`` (a URI list's
        own order)."""
        if self.source_format == "uris":
            return "listed"
        command = list(self.raw.get("command") or ())
        return command[command.index("--order") + 1] if "--order" in command[:-1] else "sorted"

    @property
    def latent_channels(self) -> int:
        """M: the channels of ŷ."""
        return int(self.codec["M"])

    @property
    def max_pixels(self) -> int:
        """The most padded pixels a container of this dataset may declare: the --max-pixels it
        was converted with (the converter refuses larger padded images)."""
        v = self.preprocessing.get("max_pixels", MAX_PIXELS)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise DatasetError(f"manifest.json: preprocessing.max_pixels is {str(v)[:40]!r}, "
                               "not a positive integer")
        return v

    def splits_with_samples(self) -> list[str]:
        return [s for s, d in self.splits.items() if d["samples"]]

    def shards_of(self, split: str) -> list[ListedShard]:
        """The shards of ``split`` that hold samples, in order."""
        return [s for s in self.shards if s.split == split and s.samples]


def read_manifest(layout: Layout) -> Manifest:
    """``layout``'s manifest, checked (format, version, every shard entry) and typed."""
    try:
        m = json.loads(read_file(layout.manifest))
    except FileNotFoundError:
        raise DatasetError(f"{layout.manifest} not found: is {layout.root} a latent dataset "
                           "(made by `latents convert`), and did the conversion finish?") from None
    if m.get("format") != FORMAT:
        raise DatasetError(f"{layout.manifest} is not a latent-shards manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{layout.root} has format version {m.get('format_version')}; this "
                           f"latent-shards reads version {FORMAT_VERSION}")
    _check_shards(layout, m)
    return Manifest.from_json(m, str(layout.manifest))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_shards(layout: Layout, m: dict) -> None:
    """A manifest from elsewhere is untrusted: every shard entry must name a shard of this
    dataset (no path outside OUT), of its own split, with sane counts and a sha256."""
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise DatasetError(f"{layout.manifest} has no shard list")
    seen = set()
    for s in shards:
        where = f"{layout.manifest}: shard entry {str(s)[:80]}"
        if not isinstance(s, dict):
            raise DatasetError(f"{where} is not an object")
        name = check_shard_name(s.get("name"))
        if name in seen:
            raise DatasetError(f"{where} lists shard {name} twice")
        seen.add(name)
        if name.rsplit("-", 1)[0] != s.get("split"):
            raise DatasetError(f"{where}: shard {name} is not of split {s.get('split')!r}")
        for k in ("samples", "failures", "tar_bytes"):
            if not isinstance(s.get(k), int) or isinstance(s.get(k), bool) or s[k] < 0:
                raise DatasetError(f"{where}: {k} must be a count, not {s.get(k)!r}")
        if not isinstance(s.get("tar_sha256"), str) or not _SHA256.fullmatch(s["tar_sha256"]):
            raise DatasetError(f"{where}: tar_sha256 is not a sha256")
