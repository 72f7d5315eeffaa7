"""JPEG at a matched rate: the quality search lands on the closest bpp JPEG can reach."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.eval.utility import JPEG_QUALITIES, jpeg_at_bpp
from pipeline.shards.index import bits_per_pixel


def test_jpeg_at_bpp_is_the_closest_quality():
    rng = np.random.default_rng(0)
    img = Image.fromarray(np.kron(rng.integers(0, 256, (32, 48, 3)), np.ones((4, 4, 1))).astype(np.uint8))
    all_bpp = []
    for q in JPEG_QUALITIES:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q, optimize=True)
        all_bpp.append(bits_per_pixel(len(buf.getvalue()), img.width * img.height))
    for target in (0.5, 1.0, 2.0, 4.0):
        data, got = jpeg_at_bpp(img, target)
        assert got == bits_per_pixel(len(data), img.width * img.height)
        best = min(abs(b - target) for b in all_bpp)
        assert abs(got - target) <= best + 0.05  # the search may stop one quality away from the best
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_a_grey_image_is_one_jpeg_channel_and_reaches_lower_rates():
    """A grey image stored as RGB is encoded as one channel, so JPEG is not charged for two
    empty chroma planes: its lowest rate drops, and the pixels decode to the same grey."""
    rng = np.random.default_rng(1)
    grey = np.kron(rng.integers(0, 256, (32, 32)), np.ones((4, 4))).astype(np.uint8)
    img = Image.fromarray(np.stack([grey] * 3, -1))
    data, low = jpeg_at_bpp(img, 0.01)
    assert Image.open(io.BytesIO(data)).mode == "L"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITIES[0])
    assert low < bits_per_pixel(len(buf.getvalue()), img.width * img.height)
    colour = img.copy()
    colour.putpixel((0, 0), (255, 0, 0))  # one coloured pixel: three channels again
    data, _ = jpeg_at_bpp(colour, 0.01)
    assert Image.open(io.BytesIO(data)).mode == "RGB"


def test_step_cost_sresnet_and_resnet_differ_only_in_the_stem():
    """The cost comparison's FLOP split: sResNet-18's stem ends where ResNet-18's does, so
    everything after the stems costs the same; cResNet-18 skips three stages."""
    from pipeline.eval.utility import step_cost

    rows = {r["arch"]: r for r in step_cost(batch=1, reps=1)["rows"]}
    body = {a: r["gflops"] - r["stem_gflops"] for a, r in rows.items()}
    assert body["resnet18"] == pytest.approx(body["sresnet18"], rel=1e-6)
    assert rows["cresnet18"]["gflops"] < rows["resnet18"]["gflops"] / 3
    assert all(r["ms"] > 0 and 0 < r["stem_gflops"] < r["gflops"] for r in rows.values())
