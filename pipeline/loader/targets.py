"""Detection and segmentation targets, transformed exactly with the latent crop and flip.

Coordinates: a latent cell covers 16×16 pixels of the encoded image (the image the codec
saw, after the converter's resize). Boxes come out in **pixels of the latent window**:
``(x, y)`` in ``[0, 16·w] × [0, 16·h]`` for a window of ``h × w`` cells, xyxy, the
origin at the window's top-left corner; divide by 16 for latent-grid units. Masks come out
at 16× the window (one label per pixel of the window), 255 where nothing is known (outside
the image, on VOC's void band, crowd regions).

Rules, applied in this order:

1. crop: the window ``[16·left, 16·(left + w)) × [16·top, 16·(top + h))`` of the encoded
   image; a box is clipped to the window and to the image, and kept only if what remains is
   at least ``min_visible`` of its area (default 0.3) and at least one pixel on each side;
2. flip (horizontal): ``x → 16·w − x`` for boxes (xmin and xmax swap), the mask mirrored.

With scale augmentation (`ScaleAug`, like torchvision's ``RandomResizedCrop``) the crop is a
region of ``rh × rw`` cells resampled to the ``h × w`` window: ŷ by ``nearest`` (its integer
values kept), ``bilinear`` or ``area``; every point maps by the one affine map
``x → (x − 16·left)·w/rw``, ``y → (y − 16·top)·h/rh`` (cell centres to cell centres, as
``align_corners=False`` resampling does), boxes exactly, masks by nearest sampling of the
pixel centres. Clipping and ``min_visible`` are judged in the region, before the resampling.

A grid smaller than the window is zero-padded on the right and bottom (the loader's rule for
ŷ); boxes are untouched by it and the mask is 255 there.
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError

IGNORE = 255
TARGETS = ("class", "detection", "segmentation")


RESAMPLE = {"nearest": "nearest-exact", "bilinear": "bilinear", "area": "area"}


@dataclass(frozen=True)
class ScaleAug:
    """Scale and aspect augmentation of ŷ: a region of ``scale`` × the grid's area with an
    aspect in ``ratio`` (log-uniform), drawn as ``RandomResizedCrop`` draws it, resampled to
    the training window."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resample: str = "nearest"  # nearest keeps ŷ's integers; bilinear; area

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"scale augmentation wants 0 < scale ≤ 1 and ratio > 0 (low, high), got "
                              f"scale {self.scale}, ratio {self.ratio}")
        if self.resample not in RESAMPLE:
            raise ConfigError(f"--resample is one of {', '.join(RESAMPLE)}, not {self.resample!r}")


@dataclass(frozen=True)
class Crop:
    """Where a latent window sits in its grid (cells), and whether it is mirrored; with
    ``src_height`` / ``src_width`` the window is resampled from a region of that size."""

    top: int
    left: int
    height: int  # window, cells
    width: int
    flip: bool
    src_height: int | None = None  # the region, cells (None: the window itself)
    src_width: int | None = None
    resample: str = "nearest"

    @property
    def region(self) -> tuple[int, int]:
        return self.src_height or self.height, self.src_width or self.width

    @property
    def scaled(self) -> bool:
        return self.region != (self.height, self.width)


def choose_crop(grid_hw: tuple[int, int], window: tuple[int, int] | None, rng: random.Random | None,
                aug: ScaleAug | None = None) -> Crop:
    """A random (``rng``) or centre (``rng=None``) window and a random flip. The random
    draws are the loader's since its first version: top, left, then the flip. With ``aug``
    (training only) a resampled region instead (`choose_region`)."""
    if aug is not None and rng is not None and window is not None:
        return choose_region(grid_hw, window, rng, aug)
    h, w = grid_hw
    if window is None:
        wh, ww, top, left = h, w, 0, 0
    else:
        wh, ww = window
        ph, pw = max(h, wh), max(w, ww)  # after padding a small grid
        top = rng.randint(0, ph - wh) if rng else (ph - wh) // 2
        left = rng.randint(0, pw - ww) if rng else (pw - ww) // 2
    flip = rng is not None and rng.random() < 0.5
    return Crop(top, left, wh, ww, flip)


def choose_region(grid_hw: tuple[int, int], window: tuple[int, int], rng: random.Random,
                  aug: ScaleAug) -> Crop:
    """torchvision's ``RandomResizedCrop`` draw on the latent grid (whole cells): up to ten
    tries at an area and a log-uniform aspect that fit, else the whole grid cut to the
    nearest allowed aspect, centred; then the flip."""
    h, w = grid_hw
    lr = (math.log(aug.ratio[0]), math.log(aug.ratio[1]))
    for _ in range(10):
        area = h * w * rng.uniform(*aug.scale)
        aspect = math.exp(rng.uniform(*lr))
        rw, rh = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < rw <= w and 0 < rh <= h:
            top, left = rng.randint(0, h - rh), rng.randint(0, w - rw)
            break
    else:
        aspect = w / h
        if aspect < aug.ratio[0]:
            rw, rh = w, max(1, round(w / aug.ratio[0]))
        elif aspect > aug.ratio[1]:
            rh, rw = h, max(1, round(h * aug.ratio[1]))
        else:
            rh, rw = h, w
        rh, rw = min(rh, h), min(rw, w)
        top, left = (h - rh) // 2, (w - rw) // 2
    flip = rng.random() < 0.5
    return Crop(top, left, window[0], window[1], flip, rh, rw, aug.resample)


def crop_latent(y: torch.Tensor, crop: Crop) -> torch.Tensor:
    if crop.scaled:
        rh, rw = crop.region
        region = y[:, crop.top : crop.top + rh, crop.left : crop.left + rw][None]
        mode = RESAMPLE[crop.resample]
        kw = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        y = F.interpolate(region.float(), size=(crop.height, crop.width), mode=mode, **kw)[0].to(y.dtype)
        return (y.flip(-1) if crop.flip else y).contiguous()
    ph, pw = max(0, crop.top + crop.height - y.shape[1]), max(0, crop.left + crop.width - y.shape[2])
    if ph or pw:
        y = torch.nn.functional.pad(y, (0, pw, 0, ph))
    y = y[:, crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    return (y.flip(-1) if crop.flip else y).contiguous()


def crop_boxes(boxes: np.ndarray, image_hw: tuple[int, int], crop: Crop,
               min_visible: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[K, 4]`` (xyxy, encoded-image pixels) in window pixels, and which were kept."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = crop.left * CELL, crop.top * CELL
    W, H = crop.width * CELL, crop.height * CELL
    RH, RW = (v * CELL for v in crop.region)
    ih, iw = image_hw
    lo = np.array([max(x0, 0), max(y0, 0)] * 2, dtype=np.float64)
    hi = np.array([min(x0 + RW, iw), min(y0 + RH, ih)] * 2, dtype=np.float64)
    clipped = np.clip(boxes, lo, hi)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw >= 1) & (ch >= 1) & (cw * ch >= min_visible * np.maximum(area, 1e-12))
    out = clipped[keep] - np.array([x0, y0, x0, y0], dtype=np.float64)
    if crop.scaled:
        out = out * np.array([W / RW, H / RH, W / RW, H / RH])
    if crop.flip:
        out = np.stack([W - out[:, 2], out[:, 1], W - out[:, 0], out[:, 3]], axis=1)
    return out.reshape(-1, 4), keep


def crop_mask(mask: np.ndarray, crop: Crop) -> np.ndarray:
    """The window's part of an encoded-size class mask, at 16× the window; 255 outside the image."""
    H, W = crop.height * CELL, crop.width * CELL
    y0, x0 = crop.top * CELL, crop.left * CELL
    out = np.full((H, W), IGNORE, dtype=np.uint8)
    if crop.scaled:  # nearest: each output pixel's centre, mapped back into the region
        RH, RW = (v * CELL for v in crop.region)
        ys = y0 + np.floor((np.arange(H) + 0.5) * RH / H).astype(np.int64)
        xs = x0 + np.floor((np.arange(W) + 0.5) * RW / W).astype(np.int64)
        iy, ix = ys < mask.shape[0], xs < mask.shape[1]
        out[np.ix_(iy, ix)] = mask[np.ix_(ys[iy], xs[ix])]
        return out[:, ::-1].copy() if crop.flip else out
    sub = mask[y0 : y0 + H, x0 : x0 + W]
    out[: sub.shape[0], : sub.shape[1]] = sub
    return out[:, ::-1].copy() if crop.flip else out


# -- a sample's target payload: its JSON and its mask PNG, one blob (what the warm cache keeps) --
def member_scale(seed: int, epoch: int, key: str, members: tuple[float, ...]) -> float:
    """The encoding a sample draws in an epoch under the members policy: one of ``members``,
    uniformly, seeded by (seed, epoch, key) alone, so the ŷ loader under any worker or rank
    layout and the pixel baselines draw alike."""
    return random.Random(f"{seed}:{epoch}:{key}").choice(members)


def member_mask(mask: np.ndarray, enc_hw: tuple[int, int]) -> np.ndarray:
    """A class mask at the sample's encoded size ``enc_hw``: as stored, or, for a scale member
    (`convert --scales`), the image's mask resampled nearest to the member's size. `target_of`
    applies it, so the ŷ loader and the pixel baselines share the one rule."""
    h, w = enc_hw
    if mask.shape[:2] == (h, w):
        return mask
    return np.asarray(Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).resize(
        (w, h), Image.Resampling.NEAREST))


def pack_payload(sample_json: bytes, mask_png: bytes | None) -> bytes:
    return struct.pack("<I", len(sample_json)) + sample_json + (mask_png or b"")


def unpack_payload(blob: bytes) -> tuple[dict, np.ndarray | None]:
    n = struct.unpack_from("<I", blob)[0]
    meta = json.loads(blob[4 : 4 + n])
    rest = blob[4 + n :]
    return meta, (np.asarray(Image.open(io.BytesIO(rest))) if rest else None)


def build_target(kind: str, blob: bytes, crop: Crop, min_visible: float = 0.3) -> dict:
    """`target_of` a packed payload (what the shards and the warm cache hold)."""
    return target_of(kind, *unpack_payload(blob), crop, min_visible)


def target_of(kind: str, meta: dict, mask: np.ndarray | None, crop: Crop, min_visible: float = 0.3) -> dict:
    """The target dict of one sample (its JSON ``meta``: targets, sizes; its class mask at the
    encoded size) under ``crop``: for ``detection`` ``boxes`` (float32 [K, 4], window pixels),
    ``labels`` (int64), ``difficult`` and ``iscrowd`` (bool), and ``mask`` where the sample has
    one; for ``segmentation`` ``mask`` (int64 [16h, 16w])."""
    if mask is not None:  # a scale member's sample gives its own encoded size
        mask = member_mask(mask, meta["enc_hw"])
    if kind == "segmentation":
        if mask is None:  # e.g. a VOC image outside the Segmentation subset: nothing counted, like
            # an unlabelled sample in classification
            return {"mask": torch.full((crop.height * CELL, crop.width * CELL), IGNORE, dtype=torch.int64)}
        return {"mask": torch.from_numpy(crop_mask(mask, crop).astype(np.int64))}
    eh, ew = meta["enc_hw"]
    boxes = (meta.get("targets") or {}).get("boxes") or []
    xyxy = encoded_boxes(np.array([b["xyxy"] for b in boxes], dtype=np.float64).reshape(-1, 4),
                         meta["orig_hw"], (eh, ew))
    kept, keep = crop_boxes(xyxy, (eh, ew), crop, min_visible)
    flags = [b.get("flags", {}) for b in boxes]
    kept_rows = torch.from_numpy(keep)
    target = {
        "boxes": torch.from_numpy(kept.astype(np.float32)),
        "labels": torch.tensor([b["label"] for b in boxes], dtype=torch.int64)[kept_rows],
        "difficult": torch.tensor([bool(f.get("difficult")) for f in flags], dtype=torch.bool)[kept_rows],
        # Open Images' group-of boxes are crowds: one box over many instances
        "iscrowd": torch.tensor([bool(f.get("crowd") or f.get("IsGroupOf")) for f in flags],
                                dtype=torch.bool)[kept_rows],
    }
    if mask is not None:
        target["mask"] = torch.from_numpy(crop_mask(mask, crop).astype(np.int64))
    return target


def encoded_boxes(xyxy: np.ndarray, orig_hw, enc_hw) -> np.ndarray:
    """Normalised boxes (fractions of the source image) in pixels of the encoded image: through
    the converter's resize (shorter side, aspect kept) and, where it cropped, its centre crop.

    Both are read off the sample's own sizes: the resize scale is the encoded shorter side over
    the original's; an encoded image smaller than the resized one was centre-cropped."""
    from pipeline.images import ImagePolicy, target_size

    (oh, ow), (eh, ew) = orig_hw, enc_hw
    rw, rh = target_size(ow, oh, ImagePolicy(size=min(eh, ew)))  # the converter's own formula
    left, top = (rw - ew) // 2, (rh - eh) // 2
    return xyxy * np.array([rw, rh, rw, rh]) - np.array([left, top, left, top])


def detection_collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """ŷ windows stacked (the loader's windows are equal), targets kept as a list of dicts
    (their box counts differ): what torchvision's detection models take."""
    return torch.stack([y for y, _ in batch]), [t for _, t in batch]
