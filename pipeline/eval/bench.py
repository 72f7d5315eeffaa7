"""Benchmarks: where conversion time goes, measured side by side on the same images."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from compressai.layers import GDN
from PIL import Image

from pipeline.codec.codec import Codec
from pipeline.images import ImagePolicy, prepare_image
from pipeline.tasks.photos import bundled_photos

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class EncodeProfile:
    image_hw: tuple[int, int]  # padded size the codec saw
    threads: int
    prepare_ms: float  # JPEG decode + EXIF + colour + resize + pad
    g_a_ms: float
    encode_ms: float  # g_a + h_a + entropy parameters + rANS (Codec.encode)
    decode_y_ms: float  # rANS decode of z and y + entropy parameters, no g_s
    g_a_gmac: float

    @property
    def entropy_ms(self) -> float:
        return self.encode_ms - self.g_a_ms

    def to_json(self) -> dict:
        return {**asdict(self), "entropy_ms": self.entropy_ms}


def imagenet_like_jpegs(size=(500, 375), quality: int = 90) -> list[bytes]:
    """The bundled colour photos resized to a typical ImageNet size, as JPEG bytes."""
    out = []
    for p in bundled_photos(colour_only=True):
        buf = io.BytesIO()
        Image.open(p.path).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
            buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def gmac(module: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds (×10⁹) of ``module`` on ``x``: its convolutions, and GDN's (and simplified
    GDN's) C×C mixing of the channels at every position."""
    total = 0

    def conv(m, _inp, out):
        nonlocal total
        total += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    def gdn(_m, _inp, out):
        nonlocal total
        total += out.numel() * out.shape[1]

    hooks = [m.register_forward_hook(conv) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(gdn) for m in module.modules() if isinstance(m, GDN)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return total / 1e9


def profile_encode(codec: Codec, jpegs: list[bytes], threads: int = 1, batch: int = 8,
                   reps: int = 3) -> EncodeProfile:
    """Per-image milliseconds of each conversion stage (median of ``reps`` passes)."""
    torch.set_num_threads(threads)
    policy = ImagePolicy(multiple=codec.arch.multiple)
    preps = [prepare_image(j, policy) for j in jpegs]
    same = [p for p in preps if p.padded_hw == preps[0].padded_hw][:batch]
    x = torch.from_numpy(np.stack([p.pixels for p in same])).permute(0, 3, 1, 2).float() / 255
    hw = [p.enc_hw for p in same]
    n = len(same)
    prepare = _median_ms(lambda: [prepare_image(j, policy) for j in jpegs], reps) / len(jpegs)
    with torch.no_grad():
        g_a = _median_ms(lambda: codec.model.g_a(x), reps) / n
    encode = _median_ms(lambda: codec.encode(x, hw), reps) / n
    blobs = [e.data for e in codec.encode(x, hw)]
    decode = _median_ms(lambda: [codec.decode_y(b) for b in blobs], reps) / n
    return EncodeProfile(tuple(x.shape[2:]), threads, prepare, g_a, encode, decode,
                         gmac(codec.model.g_a, x[:1]))


def make_jpeg_folder(out, n: int = 96, size=(500, 375), seed: int = 0):
    """``n`` ImageNet-like JPEGs (random crops of the bundled photos) in two class folders."""
    from pathlib import Path

    out = Path(out)
    rng = np.random.default_rng(seed)
    photos = [Image.open(p.path).convert("RGB") for p in bundled_photos(colour_only=True)]
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        s = rng.uniform(0.5, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        d = out / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        crop = img.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
        crop.save(d / f"{i:05d}.jpg", quality=90)
    return out


@dataclass(frozen=True)
class DecodeProfile:
    """ŷ decoding beside PIL decoding the same images as JPEG (quality 90, encoded resolution)."""

    image_hw: tuple[int, int]  # encoded size (before padding)
    images: int
    jpeg_ms: float  # PIL: open + decode to RGB
    decode_y_ms: float  # Codec.decode_y with the fast rANS decoder
    decode_y_reference_ms: float  # Codec.decode_y with CompressAI's decoder
    z_rans_ms: float
    h_s_ms: float  # entropy parameters: h_s (integer or float64) + CDF indexes (+ means)
    entropy_params: str  # which procedure (the codec's entropy-parameter id)
    y_rans_ms: float  # fast decoder
    y_rans_reference_ms: float  # CompressAI's decoder (list marshalling included)
    fast_decoder: bool

    @property
    def ratio(self) -> float:
        return self.decode_y_ms / self.jpeg_ms

    def to_json(self) -> dict:
        return {**asdict(self), "decode_over_jpeg": self.ratio,
                "reference_over_jpeg": self.decode_y_reference_ms / self.jpeg_ms}


def profile_decode(codec: Codec, jpegs: list[bytes], threads: int = 1, reps: int = 5) -> DecodeProfile:
    """Per-image milliseconds (median of ``reps`` passes over all images) of ŷ decoding and its parts,
    and of PIL decoding the images the codec encoded, re-saved as quality-90 JPEGs."""
    from pipeline.codec import fast_rans

    torch.set_num_threads(threads)
    policy = ImagePolicy(multiple=codec.arch.multiple)
    blobs, resaved = [], []
    for j in jpegs:
        p = prepare_image(j, policy)
        h, w = p.enc_hw
        x = torch.from_numpy(p.pixels.copy()).permute(2, 0, 1)[None].float() / 255
        blobs += [e.data for e in codec.encode(x, [p.enc_hw])]
        buf = io.BytesIO()
        Image.fromarray(p.pixels[:h, :w]).save(buf, "JPEG", quality=90)
        resaved.append(buf.getvalue())
    n = len(blobs)

    def pil_decode():
        for b in resaved:
            Image.open(io.BytesIO(b)).convert("RGB").load()

    jpeg = _median_ms(pil_decode, reps) / n
    fast = _median_ms(lambda: [codec.decode_y(b) for b in blobs], reps) / n
    ref = _median_ms(lambda: [codec.decode_y(b, reference=True) for b in blobs], reps) / n
    parts = dict.fromkeys(("z", "h_s", "y", "y_ref"), 0.0)
    if codec.arch.family != "factorized":
        cs = [codec.parse(b) for b in blobs]
        zs = [codec.decode_z(c)[None] for c in cs]
        pairs = [(c, codec.y_params(z)[0][0]) for c, z in zip(cs, zs, strict=True)]
        parts["z"] = _median_ms(lambda: [codec.decode_z(c) for c in cs], reps) / n
        parts["h_s"] = _median_ms(lambda: [codec.y_params(z) for z in zs], reps) / n
        parts["y"] = _median_ms(lambda: [codec.y_tables.decode(c.strings[0], i) for c, i in pairs], reps) / n
        parts["y_ref"] = _median_ms(lambda: [codec.y_tables.decode(c.strings[0], i, reference=True)
                                             for c, i in pairs], reps) / n
    return DecodeProfile(tuple(codec.parse(blobs[0]).image_hw), n, jpeg, fast, ref, parts["z"],
                         parts["h_s"], codec.entropy_params, parts["y"], parts["y_ref"],
                         fast_rans.available())


@dataclass(frozen=True)
class LoaderSpeed:
    workers: int
    batch_size: int
    samples: int  # images the JPEG loader reads
    latent_samples: int  # samples the ŷ loader reads (fewer only if some images failed to convert)
    epochs: int  # timed epochs per loader (after one warm-up epoch); figures are their medians
    jpeg_samples_per_s: float  # ImageFolder + RandomResizedCrop(224) + flip + ToTensor
    latent_cold_samples_per_s: float  # ŷ entropy-decoded every epoch, 14x14 crop + flip
    latent_warm_samples_per_s: float  # ŷ read back from the filled cache
    # first epochs of fresh loaders (worker start-up included in both): without the cache, and
    # with an empty cache that this epoch fills
    latent_cold_first_epoch_samples_per_s: float
    latent_fill_samples_per_s: float
    # largest worker's peak resident memory (VmHWM), and its growth over the worker's start
    # (the start is what the fork inherits from the parent: torch, the codec, ...)
    jpeg_peak_rss_mb: float | None
    latent_cold_peak_rss_mb: float | None
    latent_warm_peak_rss_mb: float | None
    jpeg_rss_growth_mb: float | None
    latent_cold_rss_growth_mb: float | None
    latent_warm_rss_growth_mb: float | None
    cache_bytes: int

    @property
    def speedup_cold(self) -> float:
        return self.latent_cold_samples_per_s / self.jpeg_samples_per_s

    @property
    def speedup_warm(self) -> float:
        return self.latent_warm_samples_per_s / self.jpeg_samples_per_s

    def to_json(self) -> dict:
        return {**asdict(self), "speedup_cold": self.speedup_cold, "speedup_warm": self.speedup_warm}


def _proc_status_mb(pid: int | str, field: str) -> float | None:
    """A memory field (VmRSS, VmHWM) of /proc/PID/status in MB; None off Linux."""
    from pathlib import Path

    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _RecordPid:
    """worker_init_fn: note each DataLoader worker's pid and its RSS at start (what the fork
    inherited from the parent), to read its peak RSS later."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, _worker_id: int) -> None:
        import os
        from pathlib import Path

        Path(self.folder, str(os.getpid())).write_text(str(_proc_status_mb(os.getpid(), "VmRSS") or 0))


def _peak_rss_mb(folder: str) -> tuple[float | None, float | None]:
    """(largest peak RSS, largest growth of peak RSS over the worker's start) among the live
    workers recorded in ``folder``; Linux only."""
    from pathlib import Path

    peaks, growth = [], []
    for f in Path(folder).iterdir():
        peak = _proc_status_mb(f.name, "VmHWM")
        if peak is not None:
            peaks.append(peak)
            growth.append(peak - float(f.read_text() or 0))
    return (max(peaks), max(growth)) if peaks else (None, None)


def _epoch_rate(loader, dataset=None, epoch: int = 0) -> float:
    if dataset is not None and hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    n, t = 0, time.perf_counter()
    for x, _y in loader:
        n += len(x)
    return n / (time.perf_counter() - t)


def loader_speed(latent_root: str, jpeg_root: str, cache_dir: str, workers: int = 2, batch_size: int = 32,
                 epochs: int = 3) -> LoaderSpeed:
    """Samples/s of the ŷ loader (cold, and warm from the decoded-latent cache) and of a torchvision
    JPEG loader: same images, workers and batch size; each a median over ``epochs`` timed epochs
    after one warm-up epoch (worker start-up, page cache)."""
    import tempfile

    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from pipeline.loader import LatentLoaderConfig, LatentShardDataset

    def loader(ds, pids, **kw):
        return DataLoader(ds, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                          worker_init_fn=_RecordPid(pids), **kw)

    def run(ds, pids, **kw):
        dl = loader(ds, pids, **kw)
        first = _epoch_rate(dl, ds, 0)
        rates = [_epoch_rate(dl, ds, e) for e in range(1, epochs + 1)]
        return first, float(np.median(rates)), _peak_rss_mb(pids)

    with tempfile.TemporaryDirectory() as pj, tempfile.TemporaryDirectory() as pc, \
            tempfile.TemporaryDirectory() as pf, tempfile.TemporaryDirectory() as pw:
        jpg = datasets.ImageFolder(jpeg_root, transform=transforms.Compose(
            [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
        _, jpeg_rate, (jpeg_rss, jpeg_grow) = run(jpg, pj, shuffle=True)
        cold = LatentShardDataset(LatentLoaderConfig(latent_root, window=(14, 14)))
        cold_first, cold_rate, (cold_rss, cold_grow) = run(cold, pc)
        cfg = LatentLoaderConfig(latent_root, window=(14, 14), cache=cache_dir)
        filling = LatentShardDataset(cfg)
        fill_rate = _epoch_rate(loader(filling, pf), filling, 0)  # its workers end with the loader
        # fresh workers for the warm epochs: their peak memory is the warm loader's alone
        warm = LatentShardDataset(cfg)
        _, warm_rate, (warm_rss, warm_grow) = run(warm, pw)
        cache_bytes = warm.cache.stats()["bytes"]
    return LoaderSpeed(workers, batch_size, len(jpg), len(cold), epochs, jpeg_rate, cold_rate, warm_rate,
                       cold_first, fill_rate, jpeg_rss, cold_rss, warm_rss, jpeg_grow, cold_grow, warm_grow,
                       cache_bytes)


def bare_compress_rate(codec: Codec, jpeg_root: str, threads: int, reps: int = 1) -> float:
    """Images/s of CompressAI's own ``model.compress()`` on the same images, already decoded.

    The reference for encode efficiency: no reading, no JPEG decoding, no container, no tar.
    """
    from pathlib import Path

    torch.set_num_threads(threads)
    policy = ImagePolicy(multiple=codec.arch.multiple)
    files = sorted(p for p in Path(jpeg_root).rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    preps = []
    for f in files:
        try:
            preps.append(prepare_image(f.read_bytes(), policy))
        except Exception:  # noqa: BLE001 - a broken image is convert's failure row, not a rate
            continue
    xs = [torch.from_numpy(p.pixels.copy()).permute(2, 0, 1)[None].float() / 255 for p in preps]
    model = codec.model
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            for x in xs:
                model.compress(x)
    return reps * len(xs) / (time.perf_counter() - t)
