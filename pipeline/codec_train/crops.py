"""Training crops streamed from any source the converter reads, in DataLoader workers.

`SourceCrops` is an endless ``IterableDataset``: each worker takes its share of the source's
images (in a seeded order, new every pass), decodes each one (EXIF, colour, as the
converter does) and yields a few random crops at random scales, flipped half the time.
Nothing but the listing is held in memory, so a corpus of any size trains a codec. With
``labelled=True`` each crop comes with its image's class index (the task batches of Eq. 6
from a corpus as large as ImageNet); unlabelled images are then left out.
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.errors import SourceError, redact
from pipeline.images import to_rgb
from pipeline.sources import detect_format, list_source
from pipeline.sources.base import canonical_uri, read_bytes


class SourceCrops(IterableDataset):
    def __init__(self, src: str, patch: int, scales=(1.0, 0.75, 0.5), split: str | None = "train",
                 crops_per_image: int = 4, seed: int = 0, labelled: bool = False):
        super().__init__()
        src = canonical_uri(src)
        fmt = detect_format(src)
        try:
            listing = list_source(fmt, src, split=split)
        except SourceError:
            listing = list_source(fmt, src)  # a layout without that split: every image
        items = [i for i in listing.items if i.label is not None or not labelled]
        self.uris = [i.uri for i in items]
        self.labels = {i.uri: i.label for i in items}
        self.classes, self.labelled = tuple(listing.classes), labelled
        if not self.uris:
            raise SourceError(f"no {'labelled ' if labelled else ''}image found under {src} to train a "
                              "codec on")
        if labelled and len(self.classes) < 2:
            raise SourceError(f"{src} has {len(self.classes)} class(es); a classification task needs "
                              "2 or more")
        self.patch, self.scales, self.per_image, self.seed = patch, tuple(scales), crops_per_image, seed

    def __iter__(self):
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(self.seed * 1_000_003 + wid)
        passes = 0
        if not self.uris[wid::workers]:
            return  # more workers than images: this one has no share
        while True:
            order = list(self.uris)
            random.Random(self.seed + passes).shuffle(order)
            passes += 1
            yielded = False
            for uri in order[wid::workers]:
                img = self._load(uri)
                if img is None:
                    continue
                yielded = True
                for _ in range(self.per_image):
                    crop = self._crop(img, rng)
                    yield (crop, self.labels[uri]) if self.labelled else crop
            if not yielded:
                raise SourceError(f"none of this worker's {len(order[wid::workers])} image(s) could be read "
                                  f"(first: {redact(order[wid])}); check the source and its credentials")

    def _load(self, uri: str) -> Image.Image | None:
        try:
            return to_rgb(Image.open(io.BytesIO(read_bytes(uri))))
        except Exception:  # noqa: BLE001 - an unreadable image is skipped, as the converter records it
            return None

    def _crop(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        s = rng.choice(self.scales)
        w, h = img.size
        s = max(s, self.patch / min(w, h))  # never below one crop
        size = (max(self.patch, round(w * s)), max(self.patch, round(h * s)))
        scaled = img if s == 1.0 else img.resize(size, Image.Resampling.BICUBIC)
        x = rng.randint(0, scaled.width - self.patch)
        y = rng.randint(0, scaled.height - self.patch)
        crop = np.asarray(scaled.crop((x, y, x + self.patch, y + self.patch)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div_(255)


def crop_batches(src: str, patch: int, batch_size: int, workers: int, scales, seed: int):
    """An endless iterator of crop batches ``[batch_size, 3, patch, patch]`` from ``src``."""
    loader = DataLoader(SourceCrops(src, patch, scales, seed=seed), batch_size=batch_size,
                        num_workers=workers, persistent_workers=workers > 0)
    return iter(loader)


def labelled_batches(src: str, patch: int, batch_size: int, workers: int, seed: int,
                     scales=(1.0, 0.75, 0.5)):
    """(classes, an endless iterator of ``(crops, class indices)`` batches) from a labelled ``src``."""
    ds = SourceCrops(src, patch, scales, seed=seed, labelled=True)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    return ds.classes, iter(loader)
