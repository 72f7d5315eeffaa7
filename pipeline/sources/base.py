"""What every source reader yields: a sorted listing of items, classes, and listing failures."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import fsspec

from pipeline.errors import ConfigError, SourceError, redact
from pipeline.storage import with_retries

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp",
                    ".gif")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class SourceItem:
    """One input: where its bytes are and what its target is."""

    key: str  # stable, tar/WebDataset-safe (no dots, no slashes)
    uri: str
    split: str
    label: int | None = None
    label_name: str | None = None
    targets: str | None = None  # canonical JSON of richer targets (multi-label, boxes), if any
    mask: str | None = None  # URI of a segmentation class mask (palette PNG, 255 = ignore)


def targets_json(obj: dict) -> str:
    """Canonical JSON, so identical targets are identical bytes in KEY.json and the index."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ListingFailure:
    """An entry found while listing that cannot even be read as a file."""

    key: str
    uri: str
    split: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Listing:
    items: tuple[SourceItem, ...]  # sorted by (split, key): the shard plan slices this
    classes: tuple[str, ...] = ()
    failures: tuple[ListingFailure, ...] = field(default_factory=tuple)

    def splits(self) -> list[str]:
        return sorted({i.split for i in self.items} | {f.split for f in self.failures})


def make_key(rel_path: str) -> str:
    """A tar-safe key from a path relative to the source root.

    ``cat/img 1.jpg`` → ``cat_img_1-<hash8>``: folders join with ``_``, the extension goes,
    any other character outside ``[A-Za-z0-9_-]`` becomes ``_`` and then a short hash of the
    full relative path is appended so that distinct files never share a key.
    """
    stem = rel_path.rsplit(".", 1)[0] if "." in rel_path.rsplit("/", 1)[-1] else rel_path
    joined = stem.replace("/", "_")
    safe = _UNSAFE.sub("_", joined)
    if safe != joined or not safe:
        safe = f"{safe}-{hashlib.sha1(rel_path.encode()).hexdigest()[:8]}"
    return safe


def dedupe_keys(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """rel path → key, with a hash suffix on every key that two paths would share."""
    keys = {rel: make_key(rel) for rel, _ in pairs}
    counts: dict[str, int] = {}
    for k in keys.values():
        counts[k] = counts.get(k, 0) + 1
    return {rel: (k if counts[k] == 1 else f"{k}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}")
            for rel, k in keys.items()}


def canonical_uri(uri: str) -> str:
    """Local paths become absolute, so `./x`, `x` and `/abs/x` name the same dataset.

    Object-store URLs never carry credentials (``s3://key:secret@bucket`` would end up in
    logs and manifests, and s3fs does not read them there anyway): they are refused, with
    where to put them instead.
    """
    if "://" in str(uri):
        scheme, rest = str(uri).split("://", 1)
        if "@" in rest.split("/", 1)[0] and scheme.lower() not in ("http", "https", "ftp"):
            raise ConfigError(f"{redact(uri)}: credentials do not go in a {scheme}:// URL; set them in "
                              "the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                              "GOOGLE_APPLICATION_CREDENTIALS) or in fsspec's configuration")
        return str(uri).rstrip("/")
    return os.path.abspath(os.path.expanduser(str(uri)))


@dataclass(frozen=True)
class SplitRoot:
    """A dataset root laid out as ``<split>/…`` folders, opened through fsspec."""

    uri: str
    fs: fsspec.AbstractFileSystem
    base: str  # the root's path inside ``fs``
    splits: tuple[str, ...]

    def uri_of(self, path: str) -> str:
        """A path found through ``fs`` as a full URI again (s3://…, or a local path)."""
        return f"{self.uri.split('://', 1)[0]}://{path}" if "://" in self.uri else path


def open_root(root: str) -> SplitRoot:
    """``root`` opened through fsspec, without split folders (for layouts that list their splits
    in files: VOC's ImageSets, COCO's instance files)."""
    uri = canonical_uri(root)
    fs, base = fsspec.core.url_to_fs(uri)
    return SplitRoot(uri, fs, base.rstrip("/"), ())


def open_split_root(root: str, split: str | None, known: tuple[str, ...], layout: str) -> SplitRoot:
    """``split`` alone, or every folder of ``known`` present; an error naming the layout if none."""
    r = open_root(root)
    splits = (split,) if split else tuple(s for s in known if r.fs.isdir(f"{r.base}/{s}"))
    if not splits:
        raise SourceError(f"{r.uri} has none of {', '.join(s + '/' for s in known)}: not an {layout} layout")
    return SplitRoot(r.uri, r.fs, r.base, splits)


def read_bytes(uri: str) -> bytes:
    """The bytes of one source file, with transient storage failures retried."""
    def once() -> bytes:
        with fsspec.open(uri, "rb") as f:
            return f.read()

    return with_retries(once, f"reading {uri}")


def split_listing(items: list[SourceItem], failures: list[ListingFailure],
                  classes: tuple[str, ...] = ()) -> Listing:
    """A Listing with items and failures in their canonical (split, key) order."""
    items = sorted(items, key=lambda i: (i.split, i.key))
    failures = sorted(failures, key=lambda f: (f.split, f.key))
    return Listing(tuple(items), tuple(classes), tuple(failures))


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
