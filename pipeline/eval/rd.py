"""Rate–distortion of codecs against JPEG, WebP and AVIF on the same images: bpp from the real
bitstream bytes, PSNR and MS-SSIM, BD-rate, a plot, and CompressAI's results layout."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.codec.codec import Codec
from pipeline.images import pad_to_multiple, upright_rgb
from pipeline.shards.index import bits_per_pixel

#: Pillow quality settings swept for JPEG, WebP and AVIF.
QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def reference_formats() -> list[tuple[str, str]]:
    """(Pillow format, curve name) of the classical codecs this Pillow can write."""
    from PIL import features

    out = [("JPEG", "JPEG (Pillow)"), ("WEBP", "WebP (Pillow)")]
    if features.check("avif"):
        out.append(("AVIF", "AVIF (Pillow)"))
    return out


@dataclass(frozen=True)
class RDPoint:
    image: str
    codec_bpp: float
    codec_psnr: float
    jpeg_psnr_at_bpp: float  # JPEG's PSNR interpolated at the codec's bpp (nan: out of range)
    webp_psnr_at_bpp: float
    jpeg_min_bpp: float  # JPEG's lowest reachable bpp on this image (quality 1)
    codec_msssim: float = float("nan")  # RGB MS-SSIM (nan: a side under 161 px)

    def to_json(self) -> dict:
        return asdict(self)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """RGB MS-SSIM of two uint8 HxWx3 images (5 scales, 11-px Gaussian window, as CompressAI
    reports it); nan when a side is too short for 5 scales (under 161 px)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(a.shape[:2]) <= 160:
        return float("nan")
    # a copy: images decoded by Pillow are read-only arrays, which torch would warn about sharing
    ta, tb = (torch.from_numpy(np.array(v, dtype=np.float64)).permute(2, 0, 1)[None] for v in (a, b))
    return float(_ms_ssim(ta, tb, data_range=255.0))


def pil_sweep(img: np.ndarray) -> dict[str, list[tuple[float, float, float]]]:
    """Pillow format → (bpp, PSNR, MS-SSIM) at each of ``QUALITIES``: one image's classical
    curves, computed once and shared by every codec compared on it."""
    return {fmt: [_pil_point(img, fmt, q) for q in QUALITIES] for fmt, _ in reference_formats()}


def _by_bpp(points) -> list[tuple[float, float]]:
    return sorted((b, q) for b, q, *_ in points)


def _interp(curve: list[tuple[float, float]], bpp: float) -> float:
    xs, ys = zip(*curve, strict=True)
    if bpp < xs[0] or bpp > xs[-1]:
        return float("nan")
    return float(np.interp(bpp, xs, ys))


def evaluate_image(codec: Codec, name: str, img: np.ndarray,
                   sweep: dict[str, list[tuple[float, float, float]]] | None = None) -> RDPoint:
    """Real bitstream: encode → container bytes → reconstruct; JPEG/WebP through Pillow
    (``sweep``: the image's `pil_sweep`, when the caller has it already)."""
    bpp, quality, msssim = codec_point(codec, img)
    if sweep is None:  # PSNR alone is needed here
        sweep = {fmt: [_pil_point(img, fmt, q, msssim=False) for q in QUALITIES] for fmt in ("JPEG", "WEBP")}
    jpeg = _by_bpp(sweep["JPEG"])
    return RDPoint(name, bpp, quality, _interp(jpeg, bpp), _interp(_by_bpp(sweep["WEBP"]), bpp),
                   jpeg[0][0], msssim)


def load_rgb(path) -> np.ndarray:
    """An image file as the converter sees it (EXIF turn, colour), uint8 ``[H, W, 3]``."""
    from pathlib import Path

    return upright_rgb(Path(path).read_bytes())


def load_folder(folder) -> list[tuple[str, np.ndarray]]:
    """Every image of a Kodak-style folder (name, RGB array), in name order."""
    from pathlib import Path

    from pipeline.errors import SourceError

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SourceError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return [(p.stem, load_rgb(p)) for p in paths]


# -- curves: several codec rate points beside JPEG and WebP, BD-rate, a plot ----------------------

def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """Bjøntegaard delta rate in percent: the average bitrate difference of ``test`` against
    ``anchor`` at equal PSNR, over the PSNR range both cover (negative: ``test`` saves bits).

    Each curve is (bpp, PSNR) points; log-rate is fitted as a polynomial in PSNR (cubic with four
    or more points, lower with fewer) and the two fits are integrated over the overlap."""
    def fit(points):
        p = sorted(points, key=lambda t: t[1])
        psnrs = np.array([t[1] for t in p])
        log_r = np.log(np.array([t[0] for t in p]))
        return np.polyfit(psnrs, log_r, min(3, len(p) - 1)), psnrs.min(), psnrs.max()

    if len(anchor) < 2 or len(test) < 2:
        return float("nan")
    (pa, lo_a, hi_a), (pt, lo_t, hi_t) = fit(anchor), fit(test)
    lo, hi = max(lo_a, lo_t), min(hi_a, hi_t)
    if hi <= lo:
        return float("nan")
    ia, it = np.polyint(pa), np.polyint(pt)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_t = (np.polyval(it, hi) - np.polyval(it, lo)) / (hi - lo)
    return float((np.exp(avg_t - avg_a) - 1) * 100)


@dataclass(frozen=True)
class Curve:
    """A named rate–distortion curve averaged over images (CompressAI's results layout)."""

    name: str
    bpp: list[float]
    psnr: list[float]
    msssim: list[float] | None = None

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.bpp, self.psnr, strict=True))

    def to_json(self) -> dict:
        """``{"name", "results": {"bpp", "psnr", "ms-ssim"}}``, with CompressAI 1.2's own keys
        (``psnr-rgb``, ``ms-ssim-rgb``) too, so ``python -m compressai.utils.plot
        --results-file`` reads it. MS-SSIM is left out where an image was too small for it."""
        res = {"bpp": self.bpp, "psnr": self.psnr, "psnr-rgb": self.psnr}
        if self.msssim is not None and not any(math.isnan(v) for v in self.msssim):
            res["ms-ssim"] = res["ms-ssim-rgb"] = self.msssim
        return {"name": self.name, "results": res}


def codec_point(codec: Codec, img: np.ndarray) -> tuple[float, float, float]:
    """(bpp from the real container bytes, PSNR, MS-SSIM of the reconstruction) of one image."""
    h, w = img.shape[:2]
    padded = pad_to_multiple(img, codec.arch.multiple)
    x = torch.from_numpy(padded.copy()).permute(2, 0, 1)[None].float() / 255
    blob = codec.encode(x, [(h, w)])[0].data
    rec = codec.reconstruct(blob).mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return bits_per_pixel(len(blob), h * w), psnr(img, rec), ms_ssim(img, rec)


def reference_curves(sweeps: list[dict[str, list[tuple[float, float, float]]]]) -> list[Curve]:
    """JPEG, WebP (and AVIF where Pillow has it) over ``QUALITIES``: mean bpp, PSNR and
    MS-SSIM per quality, from each image's `pil_sweep`."""
    out = []
    for fmt, name in reference_formats():
        mean = np.array([sw[fmt] for sw in sweeps]).mean(axis=0)
        out.append(Curve(name, *([float(v) for v in mean[:, k]] for k in range(3))))
    return out


def worst_against_jpeg(rows: list[RDPoint]) -> RDPoint | None:
    """The image where the codec falls furthest below JPEG at its own bpp (None when no image
    has a JPEG figure at that rate)."""
    known = [p for p in rows if not math.isnan(p.jpeg_psnr_at_bpp)]
    return min(known, key=lambda p: p.codec_psnr - p.jpeg_psnr_at_bpp) if known else None


def _mean_point(rows: list[RDPoint]) -> dict:
    return {k: float(np.nanmean([getattr(p, k) for p in rows])) if any(
        not math.isnan(getattr(p, k)) for p in rows) else float("nan")
        for k in ("codec_bpp", "codec_psnr", "codec_msssim", "jpeg_psnr_at_bpp", "webp_psnr_at_bpp")}


@dataclass
class CurveReport:
    """Codecs as one R-D curve beside JPEG and WebP, with BD-rates and baselines at their rate."""

    points: dict[str, list[RDPoint]]  # per codec (curve members, then baselines), per image
    means: dict[str, dict]
    curve: Curve  # the codecs' mean points, by rate
    members: list[str]  # the codec behind each curve point, in the same order
    baselines: list[Curve]  # one single-point curve per baseline codec
    references: list[Curve]  # JPEG, WebP
    bd_rate: dict[str, float]  # percent, against each reference
    at_baselines: dict[str, dict]  # baseline point and the curve's PSNR at its bpp

    @property
    def curves(self) -> list[Curve]:
        return [self.curve, *self.baselines, *self.references]

    def to_json(self) -> dict:
        return {"points": {s: [p.to_json() for p in r] for s, r in self.points.items()}, "mean": self.means,
                "curves": [c.to_json() for c in self.curves], "bd_rate_percent": self.bd_rate,
                "baselines": self.at_baselines}


def evaluate_codecs(codecs: dict[str, Codec], images: list[tuple[str, np.ndarray]], name: str,
                    baselines: dict[str, Codec] | None = None,
                    on_step: Callable[[str], None] | None = None) -> CurveReport:
    """Every codec on every image (real bitstreams), the codecs as one curve, JPEG and WebP.
    ``on_step`` hears of each of the ``len(images) * (1 + len(codecs) + len(baselines))`` steps
    (an image's Pillow sweep, one codec on one image) as it ends, for a progress bar."""
    baselines = baselines or {}
    step = on_step or (lambda _what: None)

    def sweep(n: str, im: np.ndarray) -> dict:
        sw = pil_sweep(im)
        step(f"{n}: JPEG/WebP/AVIF sweep")
        return sw

    def point(spec: str, c: Codec, n: str, im: np.ndarray, sw: dict) -> RDPoint:
        p = evaluate_image(c, n, im, sw)
        step(f"{n}: {spec.rsplit('/', 1)[-1]}")
        return p

    sweeps = [sweep(n, im) for n, im in images]  # once per image, whatever the number of codecs
    points = {spec: [point(spec, c, n, im, sw) for (n, im), sw in zip(images, sweeps, strict=True)]
              for spec, c in {**codecs, **baselines}.items()}
    means = {spec: _mean_point(rows) for spec, rows in points.items()}
    members = sorted(codecs, key=lambda s: means[s]["codec_bpp"])
    curve = Curve(name, [means[s]["codec_bpp"] for s in members], [means[s]["codec_psnr"] for s in members],
                  [means[s]["codec_msssim"] for s in members])
    refs = reference_curves(sweeps)
    bd = {r.name.split(" ")[0]: bd_rate(r.points(), curve.points()) for r in refs}
    base_curves, at = [], {}
    for spec in baselines:
        b, q = means[spec]["codec_bpp"], means[spec]["codec_psnr"]
        base_curves.append(Curve(spec, [b], [q], [means[spec]["codec_msssim"]]))
        mine = float(np.interp(b, curve.bpp, curve.psnr, left=np.nan, right=np.nan))
        at[spec] = {"bpp": b, "psnr": q, "curve_psnr_at_bpp": mine}
    return CurveReport(points, means, curve, members, base_curves, refs, bd, at)


def _pil_point(img: np.ndarray, fmt: str, quality: int, msssim: bool = True) -> tuple[float, float, float]:
    """(bpp, PSNR, MS-SSIM or nan) of one image through Pillow's ``fmt`` at ``quality``."""
    h, w = img.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, quality=quality)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return bits_per_pixel(buf.tell(), h * w), psnr(img, dec), ms_ssim(img, dec) if msssim else float("nan")


def write_compressai_results(curves: list[Curve], folder) -> list:
    """One JSON per curve in CompressAI's results layout, for ``compressai.utils.plot``."""
    import json
    import re
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in curves:
        path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "-", c.name).strip("-").lower() + ".json")
        path.write_text(json.dumps(c.to_json(), indent=2) + "\n")
        paths.append(path)
    return paths


def plot_curves(curves: list[Curve], path, title: str) -> None:
    """A PNG rate–distortion plot (bpp against PSNR), limited to the codecs' bpp range."""
    from pipeline.eval.plots import new_axes, save_axes

    ours = [c for c in curves if not c.name.endswith("(Pillow)")] or curves
    hi = 1.25 * max(max(c.bpp) for c in ours)
    fig, ax = new_axes()
    for c in curves:
        keep = [(b, p) for b, p in c.points() if b <= hi]
        if keep:
            ax.plot(*zip(*keep, strict=True), marker="o", markersize=3, label=c.name)
    save_axes(fig, ax, path, "bits per pixel", "PSNR (dB, RGB)", title)
