"""Source readers, one registry keyed by format name: class-per-folder trees, ImageNet,
Open Images, VOC, COCO and URI lists, each listing items (key, URI, split, label, targets).

It may import storage, names and errors only: readers know nothing of codecs or shards.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipeline.errors import ConfigError, SourceError
from pipeline.sources.base import Listing, ListingFailure, SourceItem, read_bytes
from pipeline.sources.coco import list_coco
from pipeline.sources.imagefolder import list_imagefolder
from pipeline.sources.imagenet import list_imagenet
from pipeline.sources.openimages import list_openimages
from pipeline.sources.uris import list_uris
from pipeline.sources.voc import find_voc_root, list_voc

_WNID = re.compile(r"n\d{8}")

#: format name → reader(root, split) -> Listing. ``split=None``: every split the layout has.
READERS: dict[str, Callable[..., Listing]] = {
    "coco": list_coco,
    "imagefolder": list_imagefolder,
    "imagenet": list_imagenet,
    "openimages": list_openimages,
    "uris": list_uris,
    "voc": list_voc,
}


def detect_format(root: str) -> str:
    """The layout of ``root`` where it is unambiguous; imagefolder otherwise."""
    import fsspec

    if root.lower().endswith((".csv", ".parquet")):
        return "uris"  # one URI list
    fs, base = fsspec.core.url_to_fs(root)
    base = base.rstrip("/")
    if fs.glob(f"{base}/**/*annotations-human-imagelabels*.csv") or fs.glob(
            f"{base}/**/*class-descriptions*.csv"):
        return "openimages"
    if fs.glob(f"{base}/annotations/instances_*.json"):
        return "coco"
    if fs.glob(f"{base}/**/LOC_synset_mapping.txt"):
        return "imagenet"
    try:
        find_voc_root(fs, base)
        return "voc"
    except SourceError:
        pass
    top = fs.ls(base, detail=True) if fs.isdir(base) else []
    if top and all(e["type"] == "file" and e["name"].lower().endswith((".parquet", ".csv")) for e in top) \
            and any(e["name"].lower().endswith(".parquet") for e in top):
        return "uris"  # a folder of URI-list parts
    if fs.isdir(f"{base}/train"):
        names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(f"{base}/train", detail=False)]
        if names and all(_WNID.fullmatch(n) for n in names):
            return "imagenet"
    return "imagefolder"


def list_source(fmt: str, root: str, split: str | None = None) -> Listing:
    if fmt == "auto":
        fmt = detect_format(root)
    try:
        reader = READERS[fmt]
    except KeyError:
        raise ConfigError(f"unknown source format {fmt!r}; choose auto or one of "
                         f"{', '.join(READERS)}") from None
    return reader(root, split=split)


__all__ = ["READERS", "Listing", "ListingFailure", "SourceItem", "list_source", "read_bytes"]
