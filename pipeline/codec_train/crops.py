"""Random crops of pixels: the one sampler for codec training, integerisation calibration and
the task crops of Eq. 6.

Every image is read through `pipeline.images.upright_rgb` (EXIF turn, colour, size checks),
as the converter reads it, so a codec trains on images oriented as the ones it converts.
A crop is drawn by `random_crop`: a scale (the image resized, bicubic with antialiasing,
never below one crop), a position and a horizontal flip, all from one numpy ``Generator``.

- `CropSampler` draws from images held in memory (the bundled photos, a small labelled
  tree, calibration images); its ``rng`` is the whole state a resumed run restores.
- `SourceCrops` streams from any source the converter reads, in DataLoader workers: each
  worker takes its share of the images in a seeded order, new every pass. Nothing but the
  listing is held, so a corpus of any size trains a codec.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.errors import ConfigError, LatentShardsError, SourceError, redact
from pipeline.images import upright_rgb
from pipeline.sources import detect_format, list_source
from pipeline.sources.base import canonical_uri, read_bytes


def read_rgb(uri: str, max_side: int | None = None) -> torch.Tensor:
    """The image at ``uri`` as ``[3, H, W]`` float in [0, 1], read as the converter reads it;
    with ``max_side``, downscaled (bicubic, antialiased) so that its longer side is at most that."""
    img = to_tensor(upright_rgb(read_bytes(uri)))
    h, w = img.shape[1:]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        img = resize(img, max(1, round(h * s)), max(1, round(w * s)))
    return img


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


def resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[3, H, W]`` in [0, 1] resized to ``h`` × ``w``, bicubic with antialiasing."""
    return F.interpolate(img[None], size=(h, w), mode="bicubic", antialias=True,
                         align_corners=False)[0].clamp_(0, 1)


def rescale(img: torch.Tensor, scale: float, patch: int) -> torch.Tensor:
    """``img`` resized by ``scale`` (bicubic, antialiased), but never below one ``patch`` crop."""
    h, w = img.shape[1:]
    s = max(scale, patch / min(h, w))
    if s == 1.0:
        return img
    return resize(img, max(patch, round(h * s)), max(patch, round(w * s)))


def random_crop(img: torch.Tensor, patch: int, rng: np.random.Generator) -> torch.Tensor:
    """A ``patch`` × ``patch`` crop of an image at least that large, flipped half the time."""
    y = int(rng.integers(img.shape[1] - patch + 1))
    x = int(rng.integers(img.shape[2] - patch + 1))
    crop = img[:, y:y + patch, x:x + patch]
    return crop.flip(-1) if rng.random() < 0.5 else crop


class CropSampler:
    """Crops of images held in memory: each draw picks an image, a scale, a position and a
    flip. With ``labels`` a batch comes with its images' class indices."""

    def __init__(self, images: list[torch.Tensor], patch: int, scales=(1.0,), seed: int = 0,
                 labels: list[int] | None = None, classes: tuple[str, ...] = ()):
        if not images:
            raise ConfigError("no image to draw crops from")
        self.images, self.patch, self.scales = images, patch, tuple(scales)
        self.labels, self.classes = labels, classes
        self.rng = np.random.default_rng(seed)
        self._levels: dict[tuple[int, float], torch.Tensor] = {}

    def draw(self) -> tuple[torch.Tensor, int]:
        """One crop and the number of the image it came from."""
        k = int(self.rng.integers(len(self.images)))
        s = self.scales[int(self.rng.integers(len(self.scales)))] if len(self.scales) > 1 else self.scales[0]
        level = self._levels.get((k, s))
        if level is None:
            level = self._levels[(k, s)] = rescale(self.images[k], s, self.patch)
        return random_crop(level, self.patch, self.rng), k

    def batch(self, n: int):
        """``[n, 3, patch, patch]`` crops (and with labels, their ``[n]`` class indices)."""
        crops, ks = zip(*(self.draw() for _ in range(n)), strict=True)
        x = torch.stack(crops)
        if self.labels is None:
            return x
        return x, torch.tensor([self.labels[k] for k in ks], dtype=torch.long)


class DetectionCrops:
    """Task crops for a detection head: random windows (``window`` cells, 16 px each) of a
    detection source's train split, made ready as the converter makes them, with their boxes
    moved by the loader's own rule (`pipeline.train.pixel_detect`); seeded by ``rng`` alone."""

    def __init__(self, source: str, window: int, seed: int):
        from pipeline.train.pixel_detect import PixelDetectionDataset

        self.ds = PixelDetectionDataset(source, "train", (window, window), "detection", seed)
        self.classes = tuple(self.ds.classes)
        self.rng = np.random.default_rng([seed, 1])

    def batch(self, n: int) -> tuple[torch.Tensor, list[dict]]:
        picks = self.rng.integers(len(self.ds), size=n)
        self.ds.epoch = int(self.rng.integers(2**31))  # fresh windows for every batch
        items = [self.ds[int(i)] for i in picks]
        return torch.stack([x for x, _ in items]), [t for _, t in items]


def labelled_images(source: str, split: str = "train"
                    ) -> tuple[tuple[str, ...], list[torch.Tensor], list[int]]:
    """(classes, images, class indices) of a labelled tree's ``split``, read into memory."""
    listing = list_source("auto", source, split=split)
    items = [i for i in listing.items if i.label is not None]
    if not items or len(listing.classes) < 2:
        raise ConfigError(f"{source} has no labelled {split} images of at least 2 classes "
                          "(a class-per-folder tree, or its train/ split)")
    return tuple(listing.classes), [read_rgb(i.uri) for i in items], [i.label for i in items]


class SourceCrops(IterableDataset):
    """An endless stream of crops from any source (with ``labelled=True``, ``(crop, class)``
    pairs; unlabelled images are then left out). An unreadable image is skipped."""

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
        rng = np.random.default_rng([self.seed, wid])
        passes = 0
        if not self.uris[wid::workers]:
            return  # more workers than images: this one has no share
        while True:
            order = list(self.uris)
            np.random.default_rng([self.seed, passes]).shuffle(order)
            passes += 1
            yielded = False
            for uri in order[wid::workers]:
                img = self._load(uri)
                if img is None:
                    continue
                yielded = True
                for _ in range(self.per_image):
                    s = self.scales[int(rng.integers(len(self.scales)))]
                    crop = random_crop(rescale(img, s, self.patch), self.patch, rng).contiguous()
                    yield (crop, self.labels[uri]) if self.labelled else crop
            if not yielded:
                raise SourceError(f"none of this worker's {len(order[wid::workers])} image(s) could be read "
                                  f"(first: {redact(order[wid])}); check the source and its credentials")

    def _load(self, uri: str) -> torch.Tensor | None:
        try:
            return read_rgb(uri)
        except (LatentShardsError, OSError):  # an unreadable image is skipped, as the converter records it
            return None


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
