"""Class-per-folder reader: ``ROOT/<class>/**/<image>``; classes are the sorted folder names."""

from __future__ import annotations

import os

import fsspec

from pipeline.sources.base import (
    Listing,
    ListingFailure,
    SourceItem,
    canonical_uri,
    dedupe_keys,
    is_image_name,
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


def list_imagefolder(root: str, split: str | None = None) -> Listing:
    """List ``root``; images directly under it are unlabelled only if there are no classes."""
    root = canonical_uri(root)
    split = split or "train"
    files, odd = _walk(root)
    classes = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    index = {c: i for i, c in enumerate(classes)}
    keys = dedupe_keys([(r, r) for r in files + [o for o, _ in odd]])
    items, failures = [], []
    for rel in files:
        cls = rel.split("/", 1)[0] if "/" in rel else None
        if classes and cls is None:
            failures.append(ListingFailure(keys[rel], join(root, rel), split, "outside-class-folder",
                                           "image directly under the root of a class-per-folder tree"))
            continue
        items.append(SourceItem(keys[rel], join(root, rel), split,
                                index[cls] if cls else None, cls))
    for rel, why in odd:
        failures.append(ListingFailure(keys[rel], join(root, rel), split, "not-a-file", why))
    items.sort(key=lambda i: (i.split, i.key))
    return Listing(tuple(items), tuple(classes), tuple(sorted(failures, key=lambda f: f.key)))
