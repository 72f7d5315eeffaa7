"""A CPU-sized real-image task built from the bundled photos (deterministic, rerunnable).

Classes are the colour photos; samples are random square crops at varied scale and position,
resized to ``size`` px: ``OUT/train/<photo>/NNNN.jpg`` and held-out crops (other draws) in
``OUT/val/``. ``OUT/fewshot.json`` splits the classes into base and novel ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.photos import bundled_photos


@dataclass(frozen=True)
class PhotoTask:
    train_per_class: int = 40
    val_per_class: int = 10
    size: int = 128
    min_scale: float = 0.3  # crop side as a fraction of the photo's shorter side
    max_scale: float = 0.9
    novel: int = 4  # the last classes are held out as "novel" for few-shot
    seed: int = 0


def _crops(img: Image.Image, n: int, task: PhotoTask, rng: np.random.Generator):
    w, h = img.size
    for _ in range(n):
        side = int(min(w, h) * rng.uniform(task.min_scale, task.max_scale))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        yield img.crop((x, y, x + side, y + side)).resize((task.size, task.size), Image.Resampling.BICUBIC)


def make_photo_task(out: str | Path, task: PhotoTask = PhotoTask()) -> dict:
    out = Path(out)
    photos = bundled_photos(colour_only=True)
    names = [p.name for p in photos]
    for ci, p in enumerate(photos):
        img = Image.open(p.path).convert("RGB")
        for split, n, salt in (("train", task.train_per_class, 0), ("val", task.val_per_class, 1)):
            rng = np.random.default_rng([task.seed, ci, salt])
            d = out / split / p.name
            d.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(_crops(img, n, task, rng)):
                crop.save(d / f"{i:04d}.jpg", quality=90)
    meta = {"classes": names, "base": names[: len(names) - task.novel],
            "novel": names[len(names) - task.novel :], "task": task.__dict__}
    (out / "fewshot.json").write_text(json.dumps(meta, indent=2))
    return meta
