"""A CPU-sized detection and segmentation task: VOC-layout scenes composed from the bundled photos.

Every scene is a grey texture background (a crop of one of the grey photos, tinted) with
0–``max_objects`` objects pasted on it. An object is a crop of one colour photo (its class)
cut out by an ellipse or a convex polygon, at a random size and aspect, never overlapping
another object, sometimes running off the frame (truncated). Because the scene is drawn,
its labels are exact:

- a box is the tight box of the object's visible pixels, written as VOC writes it:
  1-based pixel indices, both ends inclusive (``xmin = x0 + 1``, ``xmax = x1 + 1``);
- ``difficult`` marks objects whose box is shorter than ``difficult_below`` px on a side;
- the class mask holds the class index + 1 (order of ``classes``) on object pixels, 0 on
  background and 255 on a 2-px band along each object's outline (VOC's "void" border);
- ``truncated`` marks objects that leave the frame.

Layout (what the ``voc`` reader reads)::

    OUT/VOC2007/JPEGImages/NNNNNN.jpg      OUT/VOC2007/Annotations/NNNNNN.xml
    OUT/VOC2007/SegmentationClass/NNNNNN.png (palette)
    OUT/VOC2007/ImageSets/Main/{train,val,trainval}.txt  (and Segmentation/, the same ids)
    OUT/VOC2007/classes.txt  the class names, in mask-value order
    OUT/fewshot.json  classes, base and novel (the last ``novel`` classes)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.errors import ConfigError
from pipeline.images import IGNORE_INDEX, voc_palette
from pipeline.tasks.photos import bundled_photos


@dataclass(frozen=True)
class SceneTask:
    train: int = 160
    val: int = 40
    size: int = 256  # scenes are size × size
    max_objects: int = 4
    min_side: int = 40  # object side before aspect, px
    max_side: int = 120
    difficult_below: int = 32  # a visible box shorter than this on a side is "difficult"
    truncate_p: float = 0.15  # chance an object is placed partly off the frame
    empty_p: float = 0.05  # chance a scene has no object at all
    novel: int = 3  # the last classes are the few-shot novel ones
    seed: int = 0

    def __post_init__(self):
        if self.train < 1 or self.val < 1 or self.size < 64 or not 0 < self.min_side <= self.max_side:
            raise ConfigError("a scene task needs train and val scenes of at least 64 px and "
                              "0 < min_side <= max_side")
        if self.max_side >= self.size:
            raise ConfigError(f"max_side {self.max_side} must be below the scene size {self.size}")


def _shape_mask(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(m)
    if rng.random() < 0.5:
        d.ellipse((0, 0, w - 1, h - 1), fill=1)
    else:  # a convex polygon: sorted angles on the ellipse
        k = int(rng.integers(5, 9))
        a = np.sort(rng.uniform(0, 2 * np.pi, k))
        pts = [(float((w - 1) / 2 * (1 + np.cos(t))), float((h - 1) / 2 * (1 + np.sin(t)))) for t in a]
        d.polygon(pts, fill=1)
    return m


def _background(greys: list[Image.Image], task: SceneTask, rng: np.random.Generator) -> np.ndarray:
    g = greys[int(rng.integers(len(greys)))]
    side = int(rng.integers(task.size // 2, min(g.size) + 1))
    x, y = int(rng.integers(0, g.width - side + 1)), int(rng.integers(0, g.height - side + 1))
    crop = g.crop((x, y, x + side, y + side)).resize((task.size, task.size), Image.Resampling.BILINEAR)
    tint = rng.uniform(0.6, 1.0, 3)
    return (np.asarray(crop, dtype=np.float32)[..., None] * tint).astype(np.uint8)


def _scene(photos: list[Image.Image], greys: list[Image.Image], task: SceneTask, rng: np.random.Generator):
    S = task.size
    img = _background(greys, task, rng)
    cls_map = np.zeros((S, S), np.uint8)
    inst = np.zeros((S, S), np.int32)  # object id + 1 per pixel
    taken: list[tuple[int, int, int, int]] = []
    objects = []
    n = 0 if rng.random() < task.empty_p else int(rng.integers(1, task.max_objects + 1))
    for _ in range(n):
        c = int(rng.integers(len(photos)))
        side = int(rng.integers(task.min_side, task.max_side + 1))
        aspect = rng.uniform(0.7, 1.4)
        w, h = max(8, int(side * np.sqrt(aspect))), max(8, int(side / np.sqrt(aspect)))
        off = rng.random() < task.truncate_p
        lo_x, lo_y = (-w // 2, -h // 2) if off else (0, 0)
        hi_x, hi_y = (S - w // 2, S - h // 2) if off else (S - w, S - h)
        for _try in range(30):
            x, y = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
            if all(x + w + 4 <= a or a + c2 + 4 <= x or y + h + 4 <= b or b + d2 + 4 <= y
                   for a, b, c2, d2 in taken):
                break
        else:
            continue  # no room left: fewer objects
        src = photos[c]
        s = rng.uniform(max(w / src.width, h / src.height), 1.0)
        cw, ch = max(w, int(src.width * s)), max(h, int(src.height * s))
        cw, ch = min(cw, src.width), min(ch, src.height)
        px, py = int(rng.integers(0, src.width - cw + 1)), int(rng.integers(0, src.height - ch + 1))
        patch = np.asarray(src.crop((px, py, px + cw, py + ch)).resize((w, h), Image.Resampling.BICUBIC))
        shape = np.asarray(_shape_mask(w, h, rng), dtype=bool)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, S), min(y + h, S)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        sub = shape[y0 - y : y1 - y, x0 - x : x1 - x]
        if sub.sum() < 16:
            continue
        img[y0:y1, x0:x1][sub] = patch[y0 - y : y1 - y, x0 - x : x1 - x][sub]
        cls_map[y0:y1, x0:x1][sub] = c + 1
        inst[y0:y1, x0:x1][sub] = len(objects) + 1
        taken.append((x, y, w, h))
        ys, xs = np.nonzero(inst == len(objects) + 1)
        bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        objects.append({"class": c, "box": (bx0, by0, bx1, by1),  # 0-based, inclusive
                        "truncated": int(x < 0 or y < 0 or x + w > S or y + h > S),
                        "difficult": int(min(bx1 - bx0 + 1, by1 - by0 + 1) < task.difficult_below)})
    # VOC's void band: 255 on the outline of every object (2 px: one inside, one outside)
    band = np.zeros((S, S), bool)
    for k in range(1, len(objects) + 1):
        m = Image.fromarray((inst == k).astype(np.uint8) * 255)
        grown = np.asarray(m.filter(ImageFilter.MaxFilter(3))) > 0
        shrunk = np.asarray(m.filter(ImageFilter.MinFilter(3))) > 0
        band |= grown & ~shrunk
    cls_map[band] = IGNORE_INDEX
    return Image.fromarray(img), cls_map, objects


def _annotation(name: str, size: int, objects: list[dict], classes: list[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = classes[o["class"]]
        ET.SubElement(ob, "pose").text = "Unspecified"
        ET.SubElement(ob, "truncated").text = str(o["truncated"])
        ET.SubElement(ob, "difficult").text = str(o["difficult"])
        bb = ET.SubElement(ob, "bndbox")
        x0, y0, x1, y1 = o["box"]
        for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1 + 1), ("ymax", y1 + 1)):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def make_scene_task(out: str | Path, task: SceneTask = SceneTask()) -> dict:
    """Write the scenes (see the module docstring); returns what ``fewshot.json`` holds."""
    out = Path(out)
    voc = out / "VOC2007"
    for d in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    colour = sorted(bundled_photos(colour_only=True), key=lambda p: p.name)
    classes = [p.name for p in colour]
    photos = [Image.open(p.path).convert("RGB") for p in colour]
    greys = [Image.open(p.path).convert("L") for p in bundled_photos() if not p.colour]
    palette = voc_palette()
    ids: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"objects": 0, "difficult": 0, "truncated": 0, "empty": 0}
    for split, n, salt in (("train", task.train, 0), ("val", task.val, 1)):
        for i in range(n):
            name = f"{salt:01d}{i:05d}"
            img, cls_map, objects = _scene(photos, greys, task, np.random.default_rng([task.seed, salt, i]))
            img.save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
            mask = Image.fromarray(cls_map, "P")
            mask.putpalette(palette)
            mask.save(voc / "SegmentationClass" / f"{name}.png")
            (voc / "Annotations" / f"{name}.xml").write_bytes(_annotation(name, task.size, objects, classes))
            ids[split].append(name)
            counts["objects"] += len(objects)
            counts["difficult"] += sum(o["difficult"] for o in objects)
            counts["truncated"] += sum(o["truncated"] for o in objects)
            counts["empty"] += not objects
    (voc / "classes.txt").write_text("".join(f"{c}\n" for c in classes))  # mask value = line number
    for sets in ("Main", "Segmentation"):
        for split, names in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
            (voc / "ImageSets" / sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    meta = {"classes": classes, "base": classes[: len(classes) - task.novel],
            "novel": classes[len(classes) - task.novel :], "task": asdict(task), "counts": counts}
    (out / "fewshot.json").write_text(json.dumps(meta, indent=2))
    return meta
