"""Shared fixtures: codecs (bundled and tiny random ones), real photos, and bad inputs."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")

from pipeline.codec import checkpoint  # noqa: E402
from pipeline.codec.load import codec_from_checkpoint, load_codec  # noqa: E402
from pipeline.codec.registry import ARCHITECTURES, get_architecture  # noqa: E402
from pipeline.tasks.photos import bundled_photos  # noqa: E402


@pytest.fixture(scope="session")
def default_codec():
    return load_codec()


@pytest.fixture(scope="session")
def float_codec():
    """The codec of datasets written before the integer h_s (float64 entropy parameters)."""
    path = Path(__file__).parent / "fixtures" / "float-v1" / "codec" / "codec.pt"
    return codec_from_checkpoint(checkpoint.read(path), "fixture:float-v1")


def tiny_checkpoint(arch: str, seed: int = 0, N: int = 16, M: int = 24) -> checkpoint.Checkpoint:
    torch.manual_seed(seed)
    return checkpoint.finalize(get_architecture(arch).build(N, M), arch)


@pytest.fixture(scope="session", params=sorted(ARCHITECTURES))
def tiny_codec(request):
    return codec_from_checkpoint(tiny_checkpoint(request.param), "test")


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> np.ndarray:
    """A held-out real photo (never seen by the default codec's training), as RGB uint8."""
    p = next(p for p in bundled_photos() if p.holdout)
    return np.asarray(Image.open(p.path).convert("RGB"))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares a huge image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored 96x48: left half red, right half blue; EXIF orientation 6 (display rotated 90° CW).

    Upright it is 48 wide, 96 tall, red on top and blue below.
    """
    arr = np.zeros((48, 96, 3), np.uint8)
    arr[:, :48] = (255, 0, 0)
    arr[:, 48:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def bad_inputs() -> dict[str, bytes | None]:
    """name → bytes (None: made specially). Every entry must end as a sample or a failure."""
    photo_jpeg = _save(Image.fromarray(gradient(120, 160)), "JPEG", quality=90)
    g16 = (np.mgrid[0:80, 0:100][1] * 655).astype(np.uint16)
    rgba = np.dstack([gradient(80, 80), np.full((80, 80), 128, np.uint8)])
    return {
        "zero.jpg": b"",
        "truncated.jpg": photo_jpeg[: len(photo_jpeg) // 2],
        "text.jpg": b"this is not an image, just some words in a text file\n" * 4,
        "page.jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "cmyk.jpg": _save(Image.fromarray(gradient(90, 110)).convert("CMYK"), "JPEG"),
        "sixteen.png": _save(Image.fromarray(g16), "PNG"),
        "palette.png": _save(Image.fromarray(gradient(70, 90)).convert("P"), "PNG"),
        "rgba.png": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "rotated.jpg": exif_rotated_jpeg(),
        "one.png": _save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        "seven-high.png": _save(Image.fromarray(gradient(7, 200)), "PNG"),
        "bomb.png": bomb_png(),
        "café au lait.jpg": photo_jpeg,
    }


@pytest.fixture()
def messy_tree(tmp_path) -> Path:
    """A class-per-folder tree: good photos, every kind of bad input, odd names and links."""
    root = tmp_path / "src"
    for name, data in bad_inputs().items():
        (root / "bad").mkdir(parents=True, exist_ok=True)
        (root / "bad" / name).write_bytes(data)
    (root / "bad" / "folder.jpg").mkdir()
    os.symlink(root / "bad" / "does-not-exist.jpg", root / "bad" / "dangling.jpg")
    (root / "good").mkdir()
    for i in range(3):
        Image.fromarray(gradient(100 + 20 * i, 150, seed=i)).save(root / "good" / f"g{i}.png")
    (root / "good" / "notes.txt").write_text("not listed: not an image extension")
    return root


@pytest.fixture()
def photo_tree(tmp_path) -> Path:
    """Eight real photos in two classes."""
    from tests.trees import write_photo_tree

    return write_photo_tree(tmp_path / "photos", 8)


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint: moto's server on 127.0.0.1, used through s3fs like any bucket.

    Configured through the environment too, so Ray worker processes started later see it.
    """
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    yield fs
    fsspec.config.conf["s3"].pop("endpoint_url", None)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def upload_tree(fs, local: Path, url: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{url}/{p.relative_to(local).as_posix()}", p.read_bytes())


@pytest.fixture(scope="session")
def ray_cluster(s3):
    """One real local Ray cluster (2 CPUs) for every Ray test, started after the S3 endpoint
    so that its worker processes inherit the endpoint's environment."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def flaky(monkeypatch):
    """The ``flaky://`` store of tests.faults, reset, with storage retries made instant."""
    import fsspec

    from pipeline import storage as retry
    from tests.faults import FlakyFS

    monkeypatch.setattr(retry, "FIRST_DELAY", 0.0)  # retry at once
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.reset()
    before = set(FlakyFS.store), set(FlakyFS.pseudo_dirs)
    yield FlakyFS
    FlakyFS.reset()
    for path in set(FlakyFS.store) - before[0]:  # what this test stored goes with it
        del FlakyFS.store[path]
    FlakyFS.pseudo_dirs[:] = [d for d in FlakyFS.pseudo_dirs if d in before[1]]


def photo_crops(n: int, size: int, seed: int = 0):
    """``n`` random ``size``-px crops of the bundled colour photos, as a float batch in [0, 1]."""
    import torch

    from pipeline.tasks.photos import bundled_photos

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p.path).convert("RGB")) for p in bundled_photos(colour_only=True)]
    out = []
    for _ in range(n):
        im = photos[rng.integers(len(photos))]
        y, x = rng.integers(im.shape[0] - size + 1), rng.integers(im.shape[1] - size + 1)
        out.append(torch.from_numpy(im[y : y + size, x : x + size].copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)
