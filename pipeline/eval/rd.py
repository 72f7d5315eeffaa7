"""Rate–distortion of a codec against JPEG and WebP on the same images, at matched bpp."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.codec.codec import Codec
from pipeline.images import pad_to_multiple, to_rgb


@dataclass(frozen=True)
class RDPoint:
    image: str
    codec_bpp: float
    codec_psnr: float
    jpeg_psnr_at_bpp: float  # JPEG's PSNR interpolated at the codec's bpp (nan: out of range)
    webp_psnr_at_bpp: float
    jpeg_min_bpp: float  # JPEG's lowest reachable bpp on this image (quality 1)

    def to_json(self) -> dict:
        return asdict(self)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _pil_curve(img: np.ndarray, fmt: str) -> list[tuple[float, float]]:
    """(bpp, PSNR) over the quality range of a PIL codec, sorted by bpp."""
    pts = []
    h, w = img.shape[:2]
    for q in (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt, quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append((8 * buf.tell() / (h * w), psnr(img, dec)))
    return sorted(pts)


def _interp(curve: list[tuple[float, float]], bpp: float) -> float:
    xs, ys = zip(*curve, strict=True)
    if bpp < xs[0] or bpp > xs[-1]:
        return float("nan")
    return float(np.interp(bpp, xs, ys))


def evaluate_image(codec: Codec, name: str, img: np.ndarray) -> RDPoint:
    """Real bitstream: encode → container bytes → reconstruct; JPEG/WebP through Pillow."""
    h, w = img.shape[:2]
    padded = pad_to_multiple(img, codec.arch.multiple)
    x = torch.from_numpy(padded.copy()).permute(2, 0, 1)[None].float().div(255)
    blob = codec.encode(x, [(h, w)])[0].data
    rec = codec.reconstruct(blob).mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    bpp = 8 * len(blob) / (h * w)
    jpeg = _pil_curve(img, "JPEG")
    return RDPoint(name, bpp, psnr(img, rec), _interp(jpeg, bpp),
                   _interp(_pil_curve(img, "WEBP"), bpp), jpeg[0][0])


def load_rgb(path) -> np.ndarray:
    return np.asarray(to_rgb(Image.open(path)))
