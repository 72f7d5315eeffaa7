"""Benchmarks: where conversion time goes, measured side by side on the same images."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.codec.codec import Codec
from pipeline.images import ImagePolicy, prepare_image
from pipeline.photos import bundled_photos


@dataclass(frozen=True)
class EncodeProfile:
    image_hw: tuple[int, int]  # padded size the codec saw
    threads: int
    prepare_ms: float  # JPEG decode + EXIF + colour + resize + pad
    g_a_ms: float
    encode_ms: float  # g_a + h_a + float64 h_s + CDF indexes + rANS (Codec.encode)
    decode_y_ms: float  # rANS decode of z and y + float64 h_s, no g_s
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


def _gmac(module: torch.nn.Module, x: torch.Tensor) -> float:
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        total += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
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
    blobs = codec.encode(x, hw)
    decode = _median_ms(lambda: [codec.decode_y(b) for b in blobs], reps) / n
    return EncodeProfile(tuple(x.shape[2:]), threads, prepare, g_a, encode, decode,
                         _gmac(codec.model.g_a, x[:1]))


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
class LoaderSpeed:
    workers: int
    batch_size: int
    latent_samples_per_s: float  # entropy decode of ŷ + 14x14 crop/flip, in workers
    jpeg_samples_per_s: float  # ImageFolder + RandomResizedCrop(224) + ToTensor
    samples: int

    @property
    def speedup(self) -> float:
        return self.latent_samples_per_s / self.jpeg_samples_per_s

    def to_json(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def _drain(loader, epochs: int) -> float:
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _y in loader:
            n += len(x)
    return n / (time.perf_counter() - t)


def loader_speed(latent_root: str, jpeg_root: str, workers: int = 2, batch_size: int = 32,
                 epochs: int = 2) -> LoaderSpeed:
    """Samples/s of the ŷ loader and of a torchvision JPEG loader, same images/workers/batch."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from pipeline.loader import LatentLoaderConfig, LatentShardDataset

    lat = LatentShardDataset(LatentLoaderConfig(latent_root, window=(14, 14)))
    jpg = datasets.ImageFolder(jpeg_root, transform=transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
    kw = dict(batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    lat_loader, jpg_loader = DataLoader(lat, **kw), DataLoader(jpg, shuffle=True, **kw)
    _drain(lat_loader, 1), _drain(jpg_loader, 1)  # start the workers, warm the page cache
    return LoaderSpeed(workers, batch_size, _drain(lat_loader, epochs), _drain(jpg_loader, epochs), len(jpg))


def bare_compress_rate(codec: Codec, jpeg_root: str, threads: int, reps: int = 1) -> float:
    """Images/s of CompressAI's own ``model.compress()`` on the same images, already decoded.

    The reference for encode efficiency: no reading, no JPEG decoding, no container, no tar.
    """
    from pathlib import Path

    torch.set_num_threads(threads)
    policy = ImagePolicy(multiple=codec.arch.multiple)
    preps = [prepare_image(p.read_bytes(), policy) for p in sorted(Path(jpeg_root).rglob("*.jpg"))]
    xs = [torch.from_numpy(p.pixels.copy()).permute(2, 0, 1)[None].float() / 255 for p in preps]
    model = codec.model
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            for x in xs:
                model.compress(x)
    return reps * len(xs) / (time.perf_counter() - t)
