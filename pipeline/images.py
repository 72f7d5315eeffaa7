"""Image bytes → padded RGB array: decode, EXIF orientation, colour, size checks, resize, pad."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.codec.container import MAX_PIXELS
from pipeline.errors import ConfigError, ImageError, Reason
from pipeline.sources.base import SourceItem, read_bytes
from pipeline.sources.coco import MASK_FROM_TARGETS, render_class_mask

# Failure reasons: the one enumeration is pipeline.errors.Reason.
EMPTY, NOT_IMAGE, TRUNCATED, BOMB = Reason.EMPTY, Reason.NOT_IMAGE, Reason.TRUNCATED, Reason.BOMB
TOO_SMALL, TOO_LARGE, DECODE = Reason.TOO_SMALL, Reason.TOO_LARGE, Reason.DECODE

_RESAMPLE = Image.Resampling.BICUBIC
MAX_SIDE = 65535  # the container stores sizes as u16


@dataclass(frozen=True)
class ImagePolicy:
    """How every image is made ready for the codec; recorded in the manifest."""

    size: int = 256  # shorter side is resized to this (aspect kept); 0 keeps the original size
    crop: bool = False  # then centre-crop to size × size
    multiple: int = 64  # pad right/bottom to this multiple (the codec's)
    pad_mode: str = "edge"  # numpy.pad mode for the padding
    min_side: int = 16  # smaller images are rejected (the codec needs at least one z element)
    max_pixels: int = MAX_PIXELS  # larger *declared* sizes are rejected before decoding
    background: tuple[int, int, int] = (255, 255, 255)  # transparency is composited on this
    #: also encode each image at these fractions of its size (`convert --scales`): extra
    #: members the loader can draw one of per epoch (the exact alternative to resampling ŷ)
    scales: tuple[float, ...] = ()

    def __post_init__(self):
        if self.size < 0 or (self.crop and self.size == 0):
            raise ConfigError(f"--size must be > 0 (with --crop) or 0 to keep the size, got {self.size}")
        tags = {scale_tag(s) for s in self.scales}
        if any(not 0 < s < 1 for s in self.scales) or len(tags) != len(self.scales):
            raise ConfigError(f"--scales are fractions strictly between 0 and 1 (the image itself is always "
                              f"encoded), distinct to two decimals (members are named sNNN); got "
                              f"{list(self.scales)}")
        object.__setattr__(self, "scales", tuple(sorted(self.scales, reverse=True)))  # one plan, any order
        for name, v in (("--min-side", self.min_side), ("--max-pixels", self.max_pixels),
                        ("the padding multiple", self.multiple)):
            if v <= 0:
                raise ConfigError(f"{name} must be positive, got {v}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["resize"] = "shorter-side" if self.size else "none"
        if not self.scales:  # datasets converted before --scales record none: they resume alike
            del d["scales"]
        return d

    def at_scale(self, scale: float, orig_hw: tuple[int, int]) -> ImagePolicy:
        """The policy of an image's ``scale`` member: its shorter side (and crop) at ``scale`` × this
        policy's, from the same decoded image, so the member shows the same field of view."""
        size = max(1, round(scale * (self.size or min(orig_hw))))
        return replace(self, size=size, min_side=1, scales=())


def scale_tag(scale: float) -> str:
    """The tar member of an image's ``scale`` encoding, after the key: ``s075.latent`` for 0.75."""
    return f"s{round(scale * 100):03d}.latent"


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray  # uint8 [Hp, Wp, 3], padded
    orig_hw: tuple[int, int]  # as decoded, after EXIF orientation
    enc_hw: tuple[int, int]  # after resize/crop, before padding: what the codec "sees"
    source_mode: str
    exif_transposed: bool

    @property
    def padded_hw(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "the file is an HTML page"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:256]):
        return "the file is plain text"
    return f"unknown format, first bytes {data[:8].hex()}"


def _open(data: bytes, policy: ImagePolicy) -> Image.Image:
    # No warnings.catch_warnings here: it is not thread-safe and this runs on a thread pool.
    # Pillow raises DecompressionBombError itself past 2x its limit; below that, the explicit
    # max_pixels check that follows decides before any pixel is decoded.
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(NOT_IMAGE, _sniff(data)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(BOMB, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise many types on bad headers
        raise _decode_error(exc) from None
    w, h = im.size
    if w * h > policy.max_pixels:
        raise ImageError(BOMB, f"declares {w}x{h} = {w * h / 1e6:.1f} MP, above the "
                         f"{policy.max_pixels / 1e6:.1f} MP limit (--max-pixels)")
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(exc) from None
    return im


def _decode_error(exc: Exception) -> ImageError:
    msg = str(exc)
    if "truncat" in msg.lower() or "broken data stream" in msg.lower():
        return ImageError(TRUNCATED, msg)
    return ImageError(DECODE, f"{type(exc).__name__}: {msg}")


def to_rgb(im: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any Pillow mode → 8-bit RGB: 16/32-bit scaled (not clipped), alpha composited."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode != "I" or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im if mode == "RGB" else im.convert("RGB")


def target_size(w: int, h: int, policy: ImagePolicy) -> tuple[int, int]:
    """(width, height) after the resize policy, before any crop."""
    if not policy.size:
        return w, h
    s = policy.size / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _check_target(w: int, h: int, policy: ImagePolicy) -> None:
    """Refuse, before resizing, what would be too big to encode (e.g. 16 x 40000 strips)."""
    nw, nh = target_size(w, h, policy)
    if policy.crop:
        nw, nh = min(nw, policy.size), min(nh, policy.size)
    pw, ph = (math.ceil(v / policy.multiple) * policy.multiple for v in (nw, nh))
    if pw * ph > policy.max_pixels or max(pw, ph) > MAX_SIDE:
        raise ImageError(TOO_LARGE, f"{w}x{h} px would be encoded at {nw}x{nh} (padded "
                         f"{pw}x{ph}), above --max-pixels {policy.max_pixels} or the "
                         f"{MAX_SIDE} px side limit; use --crop or a smaller --size")


def _resize(im: Image.Image, policy: ImagePolicy, resample=_RESAMPLE) -> Image.Image:
    """The policy's resize (shorter side) and centre crop; masks pass NEAREST."""
    if not policy.size:
        return im
    w, h = im.size
    nw, nh = target_size(w, h, policy)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), resample)
    if policy.crop:
        left, top = (nw - policy.size) // 2, (nh - policy.size) // 2
        im = im.crop((left, top, left + policy.size, top + policy.size))
    return im


def pad_to_multiple(arr: np.ndarray, multiple: int, mode: str = "edge") -> np.ndarray:
    """Pad an ``[H, W, C]`` array on the right and bottom only."""
    h, w = arr.shape[:2]
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    if not ph and not pw:
        return arr
    return np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode=mode)


def prepare_image(data: bytes, policy: ImagePolicy) -> PreparedImage:
    """Decode and normalise one image; raises ImageError(reason, detail) for bad input."""
    return prepare_scales(data, replace(policy, scales=()))[0]


def prepare_scales(data: bytes, policy: ImagePolicy
                   ) -> tuple[PreparedImage, list[tuple[float, PreparedImage]]]:
    """`prepare_image`, and the image again at each of ``policy.scales`` (decoded once). A scale
    whose image would fall below one latent cell (16 px) is left out: the loader draws among
    the members a sample has."""
    if not data:
        raise ImageError(EMPTY, "the file has 0 bytes")
    im = _open(data, policy)
    source_mode = im.mode
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose the image
        upright = im
    transposed = upright is not im and _orientation(im) not in (0, 1)
    w, h = upright.size
    if min(w, h) < policy.min_side:
        raise ImageError(TOO_SMALL, f"{w}x{h} px, shorter side below the {policy.min_side} px "
                         "minimum (--min-side)")
    _check_target(w, h, policy)
    full = to_rgb(upright, policy.background)

    def prepared(p: ImagePolicy) -> PreparedImage:
        arr = np.asarray(_resize(full, p), dtype=np.uint8)
        return PreparedImage(pad_to_multiple(arr, p.multiple, p.pad_mode), (h, w),
                             (arr.shape[0], arr.shape[1]), source_mode, bool(transposed))

    members = [(s, policy.at_scale(s, (h, w))) for s in policy.scales]
    return prepared(policy), [(s, prepared(p)) for s, p in members if p.size >= MIN_MEMBER_SIDE]


#: the shorter side below which a scale member is left out (one latent cell)
MIN_MEMBER_SIDE = 16


#: an image as decoded: no resize, no padding, any side of at least one pixel
AS_DECODED = ImagePolicy(size=0, multiple=1, min_side=1)


def upright_rgb(data: bytes) -> np.ndarray:
    """An image as the converter sees it before resizing: EXIF turn applied, any mode made
    8-bit RGB, the declared size checked against --max-pixels' default; uint8 ``[H, W, 3]``.
    Codec training, calibration and evaluation read pixels through this (or `prepare_image`)."""
    return prepare_image(data, AS_DECODED).pixels


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 0) or 0)
    except Exception:  # noqa: BLE001
        return 0


IGNORE_INDEX = 255  # a class mask's "void": pixels no loss or metric counts


def voc_palette() -> list[int]:
    """VOC's colour map (index → RGB, bit-interleaved), 256 entries, flattened for putpalette."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def prepare_mask(data: bytes, policy: ImagePolicy, orig_hw: tuple[int, int]) -> np.ndarray:
    """A class mask (palette or grey PNG of class indices, 255 = ignore) taken through the same
    resize and crop as its image, nearest-neighbour so no index is invented: uint8 [enc H, W].

    The mask must have the size of the image as decoded (after EXIF orientation); anything
    else is an ImageError(bad-annotation) naming both sizes."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # noqa: BLE001 - any undecodable mask is this sample's failure
        raise ImageError(Reason.BAD_ANNOTATION, f"the mask is not a readable image ({type(exc).__name__}: "
                         f"{exc})") from None
    if im.mode not in ("P", "L"):
        raise ImageError(Reason.BAD_ANNOTATION, f"the mask is a {im.mode} image; a class mask is a palette "
                         "(P) or grey (L) PNG of class indices")
    return fit_mask(np.asarray(im, dtype=np.uint8), policy, orig_hw)


def fit_mask(mask: np.ndarray, policy: ImagePolicy, orig_hw: tuple[int, int]) -> np.ndarray:
    """A class mask of the decoded image's size through that image's resize and crop."""
    if mask.shape != tuple(orig_hw):
        raise ImageError(Reason.BAD_ANNOTATION, f"the mask is {mask.shape[1]}x{mask.shape[0]} px, the "
                         f"image {orig_hw[1]}x{orig_hw[0]}: a mask must cover its image pixel for pixel")
    return np.asarray(_resize(Image.fromarray(mask, "L"), policy, Image.Resampling.NEAREST), dtype=np.uint8)


def mask_png(mask: np.ndarray) -> bytes:
    """A class mask as the palette PNG a sample stores (VOC's colours, so viewers show it)."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "P")
    im.putpalette(voc_palette())
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def class_mask(item: SourceItem, policy: ImagePolicy, orig_hw: tuple[int, int],
               read: Callable[[str], bytes] = read_bytes) -> np.ndarray | None:
    """``item``'s class mask at its encoded size (None without one): a mask file made ready
    like the image, or for COCO drawn from the polygons / RLE in the targets."""
    if item.mask is None:
        return None
    if item.mask == MASK_FROM_TARGETS:
        return fit_mask(render_class_mask(json.loads(item.targets)), policy, orig_hw)
    return prepare_mask(read(item.mask), policy, orig_hw)
