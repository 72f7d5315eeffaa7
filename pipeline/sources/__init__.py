"""Source readers, one registry keyed by format name."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.sources.base import Listing, ListingFailure, SourceItem, read_bytes
from pipeline.sources.imagefolder import list_imagefolder

READERS: dict[str, Callable[..., Listing]] = {
    "imagefolder": list_imagefolder,
}


def list_source(fmt: str, root: str, split: str = "train") -> Listing:
    try:
        reader = READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(READERS)}") from None
    return reader(root, split=split)


__all__ = ["READERS", "Listing", "ListingFailure", "SourceItem", "list_source", "read_bytes"]
