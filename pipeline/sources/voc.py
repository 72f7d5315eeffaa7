"""PASCAL VOC layout: ``VOCdevkit/VOC20XX/{JPEGImages,Annotations,ImageSets,SegmentationClass}``.

ROOT may be the ``VOC20XX`` folder itself, or a folder holding exactly one (``VOCdevkit``,
or its parent). Splits are the id lists ``ImageSets/Main/{train,val,test}.txt`` (``trainval``
is their union and is not listed again); where a split has no Main list, its
``ImageSets/Segmentation`` list is used.

Targets (``KEY.json`` and the index's ``targets`` column)::

    {"size": [w, h], "boxes": [{"label", "xyxy", "flags": {"difficult", "truncated"}}, ...]}

with ``xyxy`` normalised to [0, 1] from VOC's 1-based inclusive pixel indices:
``(xmin - 1) / w, (ymin - 1) / h, xmax / w, ymax / h``, so a box covers exactly the pixels
VOC names and survives any resize. Where ``SegmentationClass/ID.png`` exists it becomes the
sample's ``KEY.mask.png`` (class index + 1 per pixel, 0 background, 255 = ignore).

Classes are the names of ``classes.txt`` beside ``Annotations/`` where it exists (mask
value = line number), else VOC's 20 in VOC's order when every name found is one of them,
else the sorted names found. An id whose annotation is missing or unreadable, or whose box is empty or
outside the image, is a failures row (``missing`` / ``bad-annotation``), never a crash.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

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

SPLITS = ("train", "val", "test")
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
_PARTS = ("Annotations", "JPEGImages")


class AnnotationError(ValueError):
    """An annotation file that cannot be used: the detail says why."""


def find_voc_root(fs, base: str) -> str:
    """The ``VOC20XX`` folder at or below ``base`` (two levels at most); exactly one."""
    def is_voc(p: str) -> bool:
        return all(fs.isdir(f"{p}/{part}") for part in _PARTS)

    if is_voc(base):
        return base
    found = []
    for depth in ("*", "*/*"):  # globbing for Annotations/ only: no isdir on every entry of a big tree
        found = sorted(p.rstrip("/").rsplit("/", 1)[0] for p in fs.glob(f"{base}/{depth}/Annotations"))
        found = [p for p in found if is_voc(p)]
        if found:
            break
    if not found:
        raise SourceError(f"{base} holds no VOC folder (Annotations/ and JPEGImages/ side by side, "
                          "e.g. VOCdevkit/VOC2007)")
    if len(found) > 1:
        raise SourceError(f"{base} holds {len(found)} VOC folders ({', '.join(found)}); point ROOT at one")
    return found[0]


def parse_annotation(xml: bytes) -> tuple[tuple[int, int], list[dict]]:
    """(width, height) and the objects (name, VOC box, difficult, truncated) of one XML file."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AnnotationError(f"not well-formed XML ({exc})") from None

    def num(node, tag: str, default=None) -> int:
        el = node.find(tag)
        if el is None or el.text is None or not el.text.strip():
            if default is not None:
                return default
            raise AnnotationError(f"no <{tag}>")
        try:
            return int(float(el.text.strip()))
        except ValueError:
            raise AnnotationError(f"<{tag}> is {el.text.strip()!r}, not a number") from None

    size = root.find("size")
    if size is None:
        raise AnnotationError("no <size>: the box coordinates cannot be normalised")
    w, h = num(size, "width"), num(size, "height")
    if w <= 0 or h <= 0:
        raise AnnotationError(f"<size> is {w}x{h}")
    objects = []
    for i, ob in enumerate(root.findall("object")):
        name = (ob.findtext("name") or "").strip()
        bb = ob.find("bndbox")
        if not name or bb is None:
            raise AnnotationError(f"object {i} has no <name> or no <bndbox>")
        box = tuple(num(bb, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        x0, y0, x1, y1 = box
        if not (1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h):
            raise AnnotationError(f"object {i} ({name}) box {list(box)} is empty or outside the "
                                  f"{w}x{h} image (VOC boxes are 1-based and inclusive)")
        objects.append({"name": name, "box": box, "difficult": num(ob, "difficult", 0),
                        "truncated": num(ob, "truncated", 0)})
    return (w, h), objects


def voc_targets(size: tuple[int, int], objects: list[dict], index: dict[str, int]) -> dict:
    w, h = size
    boxes = [{"label": index[o["name"]],
              "xyxy": [(o["box"][0] - 1) / w, (o["box"][1] - 1) / h,
                       o["box"][2] / w, o["box"][3] / h],
              "flags": {"difficult": o["difficult"], "truncated": o["truncated"]}} for o in objects]
    return {"size": [w, h], "boxes": boxes}


def _ids(fs, voc: str, split: str) -> list[str] | None:
    for sets in ("Main", "Segmentation"):
        p = f"{voc}/ImageSets/{sets}/{split}.txt"
        if fs.isfile(p):
            with fs.open(p, "rb") as f:
                lines = f.read().decode("utf-8").split()
            return list(dict.fromkeys(lines))
    return None


def list_voc(root: str, split: str | None = None) -> Listing:
    r = open_root(root)
    fs, uri_of = r.fs, r.uri_of
    voc = find_voc_root(fs, r.base)
    wanted = (split,) if split else SPLITS
    per_split = {s: ids for s in wanted if (ids := _ids(fs, voc, s)) is not None}
    if not per_split:
        raise SourceError(f"{voc}/ImageSets has no {' / '.join(f'{s}.txt' for s in wanted)} under "
                          "Main/ or Segmentation/")
    present = set(fs.ls(f"{voc}/JPEGImages", detail=False))
    annotations = set(fs.ls(f"{voc}/Annotations", detail=False))
    seg = f"{voc}/SegmentationClass"
    masks = set(fs.ls(seg, detail=False)) if fs.isdir(seg) else set()
    parsed: dict[str, tuple | AnnotationError | None] = {}
    for ids in per_split.values():
        for i in ids:
            if i in parsed:
                continue
            p = f"{voc}/Annotations/{i}.xml"
            if p not in annotations:
                parsed[i] = None
                continue
            with fs.open(p, "rb") as f:
                try:
                    parsed[i] = parse_annotation(f.read())
                except AnnotationError as exc:
                    parsed[i] = exc
    names = {o["name"] for v in parsed.values() if isinstance(v, tuple) for o in v[1]}
    if fs.isfile(f"{voc}/classes.txt"):  # first: the masks' values follow its lines
        with fs.open(f"{voc}/classes.txt", "rb") as f:
            classes = tuple(n for n in f.read().decode("utf-8").splitlines() if n.strip())
    elif names <= set(VOC_CLASSES):
        classes = VOC_CLASSES
    else:
        classes = tuple(sorted(names))
    index = {n: k for k, n in enumerate(classes)}
    items, failures = [], []
    for sp, ids in per_split.items():
        for i in ids:
            img = f"{voc}/JPEGImages/{i}.jpg"
            key, ann = make_key(i), parsed[i]
            if img not in present:
                failures.append(ListingFailure(key, uri_of(img), sp, Reason.MISSING,
                                               f"{sp}.txt lists {i} but JPEGImages/{i}.jpg is not there"))
            elif ann is None:
                failures.append(ListingFailure(key, uri_of(img), sp, Reason.MISSING,
                                               f"no Annotations/{i}.xml for {i}"))
            elif isinstance(ann, AnnotationError):
                failures.append(ListingFailure(key, uri_of(img), sp, Reason.BAD_ANNOTATION,
                                               f"Annotations/{i}.xml: {ann}"))
            elif unknown := sorted({o["name"] for o in ann[1]} - set(index)):
                failures.append(ListingFailure(key, uri_of(img), sp, Reason.BAD_ANNOTATION,
                                               f"Annotations/{i}.xml names {', '.join(unknown)}, not in "
                                               "classes.txt"))
            else:
                mask = f"{voc}/SegmentationClass/{i}.png"
                items.append(SourceItem(key, uri_of(img), sp, None, None,
                                        targets_json(voc_targets(ann[0], ann[1], index)),
                                        mask=uri_of(mask) if mask in masks else None))
    return split_listing(items, failures, classes)
