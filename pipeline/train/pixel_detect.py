"""The pixel baselines' input for detection and segmentation: the source images (voc, coco),
made ready exactly as the converter makes them (resize, pad), then cut with the latent
loader's own rule on the 16-px grid (`pipeline.loader.targets`), so a pixel model sees the
same window, at the same scale, with the same boxes and masks, as a model on ŷ does.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.codec.registry import CELL
from pipeline.errors import SourceError
from pipeline.images import ImagePolicy, class_mask, prepare_scales
from pipeline.loader.targets import Crop, ScaleAug, choose_crop, member_scale, target_of
from pipeline.sources import list_source, read_bytes


class PixelDetectionDataset(Dataset):
    """``(pixels float [3, 16h, 16w] in [0, 1], target dict)`` per source image of ``split``.

    Training draws a random window of ``window`` cells and a flip (seeded by the seed, the
    epoch and the image); evaluation (``window=None``) takes the whole padded image. Images
    the converter would reject are left out (they are failures rows there)."""

    def __init__(self, source: str, split: str, window: tuple[int, int] | None, target: str = "detection",
                 seed: int = 0, policy: ImagePolicy = ImagePolicy(), augment: ScaleAug | None = None,
                 members: tuple[float, ...] | None = None):
        listing = list_source("auto", source, split=split)
        if not listing.items:
            raise SourceError(f"{source} has no images in split {split!r}")
        self.items, self.classes = list(listing.items), list(listing.classes)
        self.window, self.target, self.seed, self.policy = window, target, seed, policy
        self.augment = augment  # a region resampled to the window, drawn by the ŷ loader's rule
        self.members = members  # the image at one of these scales per epoch, drawn as ŷ's members are
        self.epoch = 0
        self.sampler = None  # the training order (a DistributedSampler), seeded by epoch with the crops

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        pixels, meta, mask = self.prepared(i)
        ph, pw = pixels.shape[:2]
        rng = random.Random(hash((self.seed, self.epoch, i))) if self.window is not None else None
        crop = choose_crop((ph // CELL, pw // CELL), self.window, rng, self.augment)
        return self.cut(pixels, crop), target_of(self.target, meta, mask, crop)

    def prepared(self, i: int) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """Image ``i`` made ready as the converter makes it: its padded pixels (uint8 [H, W, 3]),
        the sample JSON a shard would hold (key, sizes, targets) and its class mask."""
        item = self.items[i]
        # under the members policy, the image at the scale ŷ's loader draws, made as `convert
        # --scales` made ŷ's member (a scale too small for one cell: the image itself)
        scale = member_scale(self.seed, self.epoch, item.key, self.members) if self.members else 1.0
        img, member = prepare_scales(read_bytes(item.uri), replace(self.policy, scales=(
            (scale,) if scale != 1.0 else ())))
        mask = class_mask(item, self.policy, img.orig_hw)
        if member:
            img = member[0][1]  # the mask follows its encoded size in `target_of`
        meta = {"key": item.key, "enc_hw": list(img.enc_hw), "orig_hw": list(img.orig_hw),
                "targets": json.loads(item.targets) if item.targets else None}
        return img.pixels, meta, mask

    @staticmethod
    def cut(pixels: np.ndarray, crop: Crop) -> torch.Tensor:
        """The window ``crop`` names, as ŷ's window is cut: padded with zeros past the image,
        a resampled region (bilinear, antialiased) under scale augmentation, then the flip."""
        if crop.scaled:
            rh, rw = (v * CELL for v in crop.region)
            region = torch.from_numpy(np.ascontiguousarray(
                pixels[crop.top * CELL : crop.top * CELL + rh, crop.left * CELL : crop.left * CELL + rw]))
            x = region.permute(2, 0, 1)[None].float().div_(255)
            x = F.interpolate(x, size=(crop.height * CELL, crop.width * CELL), mode="bilinear",
                              align_corners=False, antialias=True)[0].clamp_(0, 1)
            return x.flip(-1) if crop.flip else x
        h, w = crop.height * CELL, crop.width * CELL
        out = np.zeros((h, w, 3), np.uint8)
        sub = pixels[crop.top * CELL : crop.top * CELL + h, crop.left * CELL : crop.left * CELL + w]
        out[: sub.shape[0], : sub.shape[1]] = sub
        if crop.flip:
            out = out[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float().div_(255)
