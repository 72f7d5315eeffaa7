"""Class-per-folder reader: ``ROOT/<class>/**/<image>``; classes are the sorted folder names."""

from __future__ import annotations

import os

import fsspec

from pipeline.errors import Reason
from pipeline.sources.base import (
    Listing,
    ListingFailure,
    SourceItem,
    canonical_uri,
    dedupe_keys,
    is_image_name,
    split_listing,
)


def _walk(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(relative file paths, [(relative path, reason)] for odd entries), POSIX separators.

    Local trees are walked with ``os.walk`` so that dangling symlinks and directories named
    like images are reported instead of silently vanishing; other filesystems use fsspec.
    """
    fs, path = fsspec.core.url_to_fs(root)
    files, odd = [], []
    if "file" in fs.protocol:
        base = os.path.abspath(path)
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames.sort()
            for d in dirnames:
                if is_image_name(d):
                    odd.append((rel_dir + d, "directory named like an image"))
            for name in filenames:
                if not is_image_name(name):
                    continue
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and not os.path.exists(full):
                    odd.append((rel_dir + name, "dangling symlink"))
                else:
                    files.append(rel_dir + name)
    else:
        prefix = path.rstrip("/") + "/"
        for p, info in sorted(fs.find(path, withdirs=True, detail=True).items()):
            rel = p[len(prefix):] if p.startswith(prefix) else p
            if not is_image_name(rel.rsplit("/", 1)[-1]):
                continue
            if info.get("type") == "directory":
                odd.append((rel, "directory named like an image"))
            else:
                files.append(rel)
    return sorted(files), sorted(odd)


def join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


SPLIT_DIRS = ("train", "val", "validation", "test")


def list_imagefolder(root: str, split: str | None = None) -> Listing:
    """``ROOT/<class>/...``, or ``ROOT/<split>/<class>/...`` when every top folder is a split.

    Images directly under a class root are unlabelled only if there are no classes.
    """
    root = canonical_uri(root)
    files, odd = _walk(root)
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    if tops and tops <= set(SPLIT_DIRS) and all(f.count("/") >= 2 for f in files):
        return _list_split_folders(root, files, odd, split)
    return _list_classes(root, files, odd, split or "train")


def _list_split_folders(root, files, odd, only: str | None) -> Listing:
    """Class folders inside split folders; one class index space across all splits."""
    classes = sorted({f.split("/")[1] for f in files})
    index = {c: i for i, c in enumerate(classes)}
    keys = dedupe_keys([(r, r) for r in files + [o for o, _ in odd]])
    items = [SourceItem(keys[r], join(root, r), r.split("/")[0], index[r.split("/")[1]], r.split("/")[1])
             for r in files if only in (None, r.split("/")[0])]
    failures = [ListingFailure(keys[r], join(root, r), r.split("/")[0], Reason.NOT_A_FILE, why)
                for r, why in odd if only in (None, r.split("/")[0])]
    return split_listing(items, failures, tuple(classes))


def _list_classes(root, files, odd, split: str) -> Listing:
    classes = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    index = {c: i for i, c in enumerate(classes)}
    keys = dedupe_keys([(r, r) for r in files + [o for o, _ in odd]])
    items, failures = [], []
    for rel in files:
        cls = rel.split("/", 1)[0] if "/" in rel else None
        if classes and cls is None:
            failures.append(ListingFailure(keys[rel], join(root, rel), split, Reason.OUTSIDE_CLASS,
                                           "image directly under the root of a class-per-folder tree"))
            continue
        items.append(SourceItem(keys[rel], join(root, rel), split,
                                index[cls] if cls else None, cls))
    for rel, why in odd:
        failures.append(ListingFailure(keys[rel], join(root, rel), split, Reason.NOT_A_FILE, why))
    return split_listing(items, failures, tuple(classes))
