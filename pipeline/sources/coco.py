"""COCO layout: ``annotations/instances_<split><year>.json`` beside the image folders
``<split><year>/`` (or ``images/<split><year>/``), e.g. ``instances_val2017.json`` and
``val2017/``. The split is the name without its year (``val``).

Targets (``KEY.json`` and the index's ``targets`` column)::

    {"size": [w, h], "boxes": [{"label", "xyxy", "flags": {"crowd"}, "segmentation"}, ...],
     "dropped_boxes": n}

``xyxy`` is COCO's ``[x, y, w, h]`` (pixels, continuous) normalised to [0, 1]; ``label`` is
the category's position in category-id order (the classes). ``segmentation`` keeps COCO's
form: polygons normalised like the boxes, or an RLE (``counts``/``size`` in the image's
pixels). Boxes under one pixel on a side are dropped and counted (``dropped_boxes``), never
silently. The worker renders every sample's class mask from these (`render_class_mask`):
class index + 1 per pixel, crowd regions 255 (ignore), larger objects drawn first so small
ones stay visible; it becomes ``KEY.mask.png``.

An image the JSON lists but the folder lacks is a ``missing`` row; an annotation pointing at
an unknown image or category makes the JSON a clear SourceError (the file is inconsistent).
"""

from __future__ import annotations

import json
import re

import numpy as np

from pipeline.errors import Reason, SourceError
from pipeline.sources.base import (
    Listing,
    ListingFailure,
    SourceItem,
    make_key,
    open_root,
    split_listing,
    targets_json,
)

_INSTANCES = re.compile(r"instances_([A-Za-z]+)(\d*)\.json$")
MASK_FROM_TARGETS = "targets:segmentation"  # SourceItem.mask: render it from the targets


def _instance_files(fs, base: str) -> dict[str, tuple[str, str]]:
    """split → (annotation path, image folder name)."""
    out: dict[str, tuple[str, str]] = {}
    for p in sorted(fs.glob(f"{base}/annotations/instances_*.json")):
        m = _INSTANCES.search(p)
        if not m:
            continue
        split, folder = m.group(1), m.group(1) + m.group(2)
        if split in out:
            raise SourceError(f"{base}/annotations has two instance files for split {split!r} "
                              f"({out[split][0]} and {p}); point ROOT at a tree with one")
        out[split] = (p, folder)
    return out


def _coco_targets(img: dict, anns: list[dict], index: dict[int, int]) -> dict:
    w, h = img["width"], img["height"]
    boxes, dropped = [], 0
    for a in anns:
        x, y, bw, bh = a["bbox"]
        if (bw < 1 or bh < 1) and not a.get("iscrowd"):  # a crowd stays: its region is "ignore"
            dropped += 1
            continue
        seg = a.get("segmentation")
        if isinstance(seg, list):  # polygons: x, y pairs in pixels → normalised
            seg = [[v / (w if k % 2 == 0 else h) for k, v in enumerate(poly)] for poly in seg]
        boxes.append({"label": index[a["category_id"]],
                      "xyxy": [x / w, y / h, min(x + bw, w) / w, min(y + bh, h) / h],
                      "flags": {"crowd": int(a.get("iscrowd", 0))},
                      **({"segmentation": seg} if seg else {})})
    return {"size": [w, h], "boxes": boxes, "dropped_boxes": dropped}


def list_coco(root: str, split: str | None = None) -> Listing:
    r = open_root(root)
    fs, base, uri, uri_of = r.fs, r.base, r.uri, r.uri_of
    files = _instance_files(fs, base)
    if not files:
        raise SourceError(f"{uri} has no annotations/instances_<split><year>.json: not a COCO layout")
    if split is not None:
        if split not in files:
            raise SourceError(f"{uri} has no instances file for split {split!r} (it has "
                              f"{', '.join(sorted(files))})")
        files = {split: files[split]}

    classes: tuple[str, ...] | None = None
    items, failures = [], []
    for sp, (path, folder) in sorted(files.items()):
        with fs.open(path, "rb") as f:
            try:
                data = json.loads(f.read())
            except ValueError as exc:
                raise SourceError(f"{path} is not JSON ({exc})") from None
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        names = tuple(c["name"] for c in cats)
        if classes is not None and names != classes:
            raise SourceError(f"{path}: its categories differ from the other split's")
        if len(names) > 254:
            raise SourceError(f"{path} has {len(names)} categories; class masks hold at most 254")
        classes, index = names, {c["id"]: k for k, c in enumerate(cats)}
        images = {im["id"]: im for im in data.get("images", [])}
        by_image: dict[int, list] = {i: [] for i in images}
        for a in data.get("annotations", []):
            if a.get("image_id") not in images or a.get("category_id") not in index:
                raise SourceError(f"{path}: annotation {a.get('id')} names image {a.get('image_id')} "
                                  f"or category {a.get('category_id')}, which the file does not list")
            by_image[a["image_id"]].append(a)
        folder_path = next((p for p in (f"{base}/{folder}", f"{base}/images/{folder}") if fs.isdir(p)), None)
        present = set(fs.ls(folder_path, detail=False)) if folder_path else set()
        for im in images.values():
            img = f"{folder_path or f'{base}/{folder}'}/{im['file_name']}"
            key = make_key(im["file_name"])
            if img not in present:
                failures.append(ListingFailure(key, uri_of(img), sp, Reason.MISSING,
                                               f"{path.rsplit('/', 1)[-1]} lists {im['file_name']}, which "
                                               f"{folder}/ does not hold"))
                continue
            t = _coco_targets(im, sorted(by_image[im["id"]], key=lambda a: a["id"]), index)
            items.append(SourceItem(key, uri_of(img), sp, None, None, targets_json(t),
                                    mask=MASK_FROM_TARGETS))
    return split_listing(items, failures, classes or ())


def render_class_mask(targets: dict) -> np.ndarray:
    """The class mask of COCO-style targets at the image's own size: uint8, class + 1, crowd
    255, background 0; larger objects first, so smaller ones stay on top. (The worker then
    takes it through the image's resize and crop, nearest-neighbour, like any mask.)"""
    from pycocotools import mask as mask_utils

    w, h = targets["size"]
    out = np.zeros((h, w), np.uint8)
    boxes = [b for b in targets["boxes"] if b.get("segmentation")]
    area = [(b["xyxy"][2] - b["xyxy"][0]) * (b["xyxy"][3] - b["xyxy"][1]) for b in boxes]
    for k in sorted(range(len(boxes)), key=lambda k: -area[k]):
        b, seg = boxes[k], boxes[k]["segmentation"]
        if isinstance(seg, list):  # normalised polygons, back to the image's pixels
            polys = [[v * (w if i % 2 == 0 else h) for i, v in enumerate(p)] for p in seg if len(p) >= 6]
            if not polys:
                continue
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        else:  # RLE in the image's pixels (uncompressed counts are a list, compressed a string)
            m = mask_utils.decode(mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list)
                                  else {"size": seg["size"], "counts": seg["counts"].encode()})
        out[m.astype(bool)] = 255 if b["flags"].get("crowd") else b["label"] + 1
    return out
