"""Open Images layout: ``<split>/<ImageID>.jpg`` with the official CSVs anywhere under ROOT.

* image-level labels ``*-annotations-human-imagelabels*.csv`` (ImageID, Source, LabelName,
  Confidence): Confidence 1 is a positive label, 0 a verified *negative* one (kept as such);
* boxes ``*-annotations-bbox.csv`` (XMin, XMax, YMin, YMax normalised, Is* flags);
* class names ``*class-descriptions*.csv`` (LabelName, DisplayName), with or without header.

A CSV belongs to the split whose name (train / validation / test) appears in its file name.
Targets go to ``KEY.json`` and the index's ``targets`` column as
``{"positive": [...], "negative": [...], "boxes": [{"label", "xyxy", "flags"}...]}``.
"""

from __future__ import annotations

import csv
import io

from pipeline.errors import SourceError
from pipeline.sources.base import (
    Listing,
    SourceItem,
    is_image_name,
    make_key,
    open_split_root,
    split_listing,
    targets_json,
)

SPLITS = ("train", "validation", "test")
BOX_FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")


def _rows(fs, path: str) -> list[dict]:
    with fs.open(path, "rb") as f:
        return list(csv.DictReader(io.StringIO(f.read().decode("utf-8"))))


def _split_of(name: str) -> str | None:
    hits = [s for s in SPLITS if s in name.rsplit("/", 1)[-1]]
    return hits[0] if len(hits) == 1 else None


def class_descriptions(fs, base: str) -> list[tuple[str, str]]:
    paths = sorted(fs.glob(f"{base}/**/*class-descriptions*.csv"))
    if not paths:
        return []
    with fs.open(paths[0], "rb") as f:
        rows = list(csv.reader(io.StringIO(f.read().decode("utf-8"))))
    if rows and rows[0][:1] == ["LabelName"]:
        rows = rows[1:]
    return [(r[0], r[1] if len(r) > 1 else r[0]) for r in rows if r]


def _annotations(fs, base: str, kind: str) -> dict[str, list[dict]]:
    """split → rows of every CSV of this kind."""
    out: dict[str, list[dict]] = {}
    for path in sorted(fs.glob(f"{base}/**/*{kind}*.csv")):
        sp = _split_of(path)
        if sp is None:
            raise SourceError(f"cannot tell the split of {path}: its name should contain one "
                               f"of {', '.join(SPLITS)}")
        out.setdefault(sp, []).extend(_rows(fs, path))
    return out


def _targets(labels: list[dict], boxes: list[dict], index: dict[str, int]) -> dict:
    pos = sorted({index[r["LabelName"]] for r in labels
                  if r["LabelName"] in index and float(r["Confidence"]) > 0})
    neg = sorted({index[r["LabelName"]] for r in labels
                  if r["LabelName"] in index and float(r["Confidence"]) == 0} - set(pos))
    bx = [{"label": index[r["LabelName"]],
           "xyxy": [round(float(r[k]), 6) for k in ("XMin", "YMin", "XMax", "YMax")],
           "flags": {k: int(r[k]) for k in BOX_FLAGS if r.get(k) not in (None, "", "-1")}}
          for r in boxes if r["LabelName"] in index]
    return {"positive": pos, "negative": neg,
            "boxes": sorted(bx, key=lambda b: (b["label"], b["xyxy"]))}


def list_openimages(root: str, split: str | None = None) -> Listing:
    sr = open_split_root(root, split, SPLITS, "Open Images")
    fs, base, splits = sr.fs, sr.base, sr.splits
    labels = _annotations(fs, base, "annotations-human-imagelabels")
    boxes = _annotations(fs, base, "annotations-bbox")
    described = class_descriptions(fs, base)
    mids = [m for m, _ in described] or sorted(
        {r["LabelName"] for rows in (*labels.values(), *boxes.values()) for r in rows})
    index = {m: i for i, m in enumerate(mids)}
    items = []
    for sp in splits:
        by_image_l: dict[str, list] = {}
        for r in labels.get(sp, []):
            by_image_l.setdefault(r["ImageID"], []).append(r)
        by_image_b: dict[str, list] = {}
        for r in boxes.get(sp, []):
            by_image_b.setdefault(r["ImageID"], []).append(r)
        for p in sorted(fs.find(f"{base}/{sp}")):
            name = p.rsplit("/", 1)[-1]
            if not is_image_name(name):
                continue
            image_id = name.rsplit(".", 1)[0]
            t = _targets(by_image_l.get(image_id, []), by_image_b.get(image_id, []), index)
            items.append(SourceItem(make_key(image_id), sr.uri_of(p), sp,
                                    None, None, targets_json(t)))
    return split_listing(items, [], tuple(mids))
