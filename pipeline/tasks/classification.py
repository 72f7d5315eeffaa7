"""CPU-sized real-image tasks built from the bundled photos (deterministic, rerunnable).

Classes are photos; samples are random square crops of one photo, resized to ``size`` px:
``OUT/train/<photo>/NNNN.jpg`` and held-out crops (other draws) in ``OUT/val/``.
``OUT/fewshot.json`` splits the classes into base and novel ones and records the recipe.

Three recipes (`TASKS`):

- ``photo-crops``: the 12 colour photos, crops of 30–90 % of the shorter side. Colour alone
  nearly separates the classes, so codecs that differ in what they keep barely differ here.
- ``grey-textures``: all 18 photos (six are grey: brick, grass, gravel, …) in grey, crops of
  64–160 px, a random quarter turn and mirror, brightness and contrast jittered. Only local
  structure and texture tell the classes apart, which is what a low rate takes away.
- ``tiles``: every photo cut into 2 × 2 tiles, each tile a class (72 classes), crops of
  40–100 % of the tile: many classes told apart by content, for pretraining a trunk that a
  detector or segmenter then starts from (the seed's transfer protocol, `--init-from`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.tasks.photos import bundled_photos


@dataclass(frozen=True)
class PhotoTask:
    train_per_class: int = 40
    val_per_class: int = 10
    size: int = 128
    min_scale: float = 0.3  # crop side as a fraction of the photo's shorter side
    max_scale: float = 0.9
    novel: int = 4  # the last classes are held out as "novel" for few-shot
    seed: int = 0
    photos: str = "colour"  # "colour": the colour photos; "all": grey ones too
    crop_px: tuple[int, int] | None = None  # crop side drawn in pixels instead of by scale
    grey: bool = False  # every crop in grey (stored as RGB)
    turns: bool = False  # a random quarter turn and mirror per crop
    jitter: float = 0.0  # contrast × U(1 ± j), brightness + U(± j/2) · 255
    tiles: int = 1  # each photo cut into tiles × tiles classes

    def __post_init__(self):
        if self.photos not in ("colour", "all"):
            raise ConfigError(f"photos is 'colour' or 'all', not {self.photos!r}")
        if self.train_per_class < 1 or self.val_per_class < 1 or self.size < 16:
            raise ConfigError("a task needs at least one train and one val crop per class, of 16 px or more")
        if self.tiles < 1:
            raise ConfigError(f"tiles must be at least 1, got {self.tiles}")


TASKS = {
    "photo-crops": PhotoTask(),
    "grey-textures": PhotoTask(photos="all", crop_px=(64, 160), grey=True, turns=True, jitter=0.25),
    "tiles": PhotoTask(photos="all", tiles=2, min_scale=0.4, max_scale=1.0, novel=8),
}


def task_recipe(kind: str, **overrides) -> PhotoTask:
    """The named recipe, with ``overrides`` (e.g. ``train_per_class``) applied."""
    if kind not in TASKS:
        raise ConfigError(f"unknown task {kind!r}; choose one of {', '.join(TASKS)}")
    return replace(TASKS[kind], **{k: v for k, v in overrides.items() if v is not None})


def _crops(img: Image.Image, n: int, task: PhotoTask, rng: np.random.Generator):
    w, h = img.size
    for _ in range(n):
        if task.crop_px:
            side = min(int(rng.integers(task.crop_px[0], task.crop_px[1] + 1)), w, h)
        else:
            side = int(min(w, h) * rng.uniform(task.min_scale, task.max_scale))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x, y, x + side, y + side)).resize((task.size, task.size), Image.Resampling.BICUBIC)
        if task.turns:
            a = np.rot90(np.asarray(crop), k=int(rng.integers(4)))
            crop = Image.fromarray(np.ascontiguousarray(a[:, ::-1] if rng.random() < 0.5 else a))
        if task.jitter:
            a = np.asarray(crop, dtype=np.float32)
            c = rng.uniform(1 - task.jitter, 1 + task.jitter)
            b = rng.uniform(-task.jitter / 2, task.jitter / 2) * 255
            a = (a - a.mean()) * c + a.mean() + b
            crop = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        yield crop.convert("RGB")


def make_photo_task(out: str | Path, task: PhotoTask = PhotoTask()) -> dict:
    out = Path(out)
    photos = bundled_photos(colour_only=task.photos == "colour")
    classes = [(p, r, c) for p in photos for r in range(task.tiles) for c in range(task.tiles)]
    names = [p.name if task.tiles == 1 else f"{p.name}-{r}{c}" for p, r, c in classes]
    for ci, ((p, r, c), name) in enumerate(zip(classes, names, strict=True)):
        img = Image.open(p.path).convert("L" if task.grey else "RGB")
        if task.tiles > 1:
            w, h = img.size
            img = img.crop((c * w // task.tiles, r * h // task.tiles, (c + 1) * w // task.tiles,
                            (r + 1) * h // task.tiles))
        for split, n, salt in (("train", task.train_per_class, 0), ("val", task.val_per_class, 1)):
            rng = np.random.default_rng([task.seed, ci, salt])
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(_crops(img, n, task, rng)):
                crop.save(d / f"{i:04d}.jpg", quality=90)
    meta = {"classes": names, "base": names[: len(names) - task.novel],
            "novel": names[len(names) - task.novel :],
            "task": {**asdict(task), "crop_px": list(task.crop_px) if task.crop_px else None}}
    (out / "fewshot.json").write_text(json.dumps(meta, indent=2))
    return meta
