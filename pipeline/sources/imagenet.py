"""ILSVRC2012 layout: ``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/`` (flat or in wnid folders).

Val labels come from ``LOC_val_solution.csv`` (first wnid of PredictionString), or the
devkit's ``ILSVRC2012_validation_ground_truth.txt`` (1-based ILSVRC2012_IDs in val order,
mapped to wnids through the devkit's ``meta.mat``), or the wnid folders themselves.
Class order comes from ``LOC_synset_mapping.txt`` when present, else sorted wnids; the
label name of a sample is its wnid.
"""

from __future__ import annotations

import csv
import io

from pipeline.errors import Reason, SourceError
from pipeline.sources.base import (
    Listing,
    ListingFailure,
    SourceItem,
    is_image_name,
    make_key,
    open_split_root,
    split_listing,
)

SPLITS = ("train", "val")


def _find(fs, root: str, name: str) -> str | None:
    """A metadata file anywhere up to two folders below the root."""
    for pattern in (f"{root}/{name}", f"{root}/*/{name}", f"{root}/*/*/{name}"):
        hits = sorted(fs.glob(pattern))
        if hits:
            return hits[0]
    return None


def _read_text(fs, path: str) -> str:
    with fs.open(path, "rb") as f:
        return f.read().decode("utf-8")


def synset_order(fs, root: str) -> list[str]:
    """The class order of LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca"), if present."""
    path = _find(fs, root, "LOC_synset_mapping.txt")
    if not path:
        return []
    return [line.split()[0] for line in _read_text(fs, path).splitlines() if line.strip()]


def _val_labels(fs, root: str, files: list[str]) -> dict[str, str]:
    """val image stem → wnid, from whichever label file is present."""
    sol = _find(fs, root, "LOC_val_solution.csv")
    if sol:
        rows = csv.DictReader(io.StringIO(_read_text(fs, sol)))
        return {r["ImageId"]: r["PredictionString"].split()[0] for r in rows if r["PredictionString"]}
    gt = _find(fs, root, "ILSVRC2012_validation_ground_truth.txt")
    if gt:
        meta = _find(fs, root, "meta.mat")
        if not meta:
            raise SourceError("ILSVRC2012_validation_ground_truth.txt needs the devkit's "
                               "data/meta.mat beside it to map ILSVRC2012_IDs to wnids")
        from scipy.io import loadmat

        with fs.open(meta, "rb") as f:
            synsets_mat = loadmat(io.BytesIO(f.read()), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s[0]): str(s[1]) for s in synsets_mat}
        ids = [int(x) for x in _read_text(fs, gt).split()]
        out = {}
        for f in files:  # line n of the ground truth is ILSVRC2012_val_<n>, whatever files exist
            stem = f.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            tail = stem.rsplit("_", 1)[-1]
            if tail.isdigit() and 1 <= int(tail) <= len(ids):
                out[stem] = id_to_wnid[ids[int(tail) - 1]]
        return out
    return {}


def list_imagenet(root: str, split: str | None = None) -> Listing:
    sr = open_split_root(root, split, SPLITS, "ILSVRC2012")
    fs, base, splits = sr.fs, sr.base, sr.splits
    order = synset_order(fs, base)
    found: list[tuple[str, str, str | None]] = []  # (split, path, wnid from folder)
    for sp in splits:
        for p in sorted(fs.find(f"{base}/{sp}")):
            rel = p[len(base) + len(sp) + 2:]
            if not is_image_name(rel.rsplit("/", 1)[-1]):
                continue
            found.append((sp, p, rel.split("/", 1)[0] if "/" in rel else None))
    val_flat = [p for sp, p, w in found if sp == "val" and w is None]
    val_labels = _val_labels(fs, base, val_flat) if val_flat else {}
    wnids = order or sorted({w for _, _, w in found if w} | set(val_labels.values()))
    index = {w: i for i, w in enumerate(wnids)}
    items, failures = [], []
    for sp, path, wnid in found:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        wnid = wnid or val_labels.get(stem)
        uri = sr.uri_of(path)
        key = make_key(stem)
        if wnid is None or wnid not in index:
            failures.append(ListingFailure(key, uri, sp, Reason.NO_LABEL,
                                           f"no class for {stem} in the label files or folders"))
            continue
        items.append(SourceItem(key, uri, sp, index[wnid], wnid))
    return split_listing(items, failures, tuple(wnids))
