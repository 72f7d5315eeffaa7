"""JPEG at a matched rate: the quality search lands on the closest bpp JPEG can reach."""

import io

import numpy as np
from PIL import Image

from pipeline.eval.utility import JPEG_QUALITIES, jpeg_at_bpp
from pipeline.shards.index import bits_per_pixel


def test_jpeg_at_bpp_is_the_closest_quality():
    rng = np.random.default_rng(0)
    img = Image.fromarray(np.kron(rng.integers(0, 256, (32, 48, 3)), np.ones((4, 4, 1))).astype(np.uint8))
    all_bpp = []
    for q in JPEG_QUALITIES:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        all_bpp.append(bits_per_pixel(len(buf.getvalue()), img.width * img.height))
    for target in (0.5, 1.0, 2.0, 4.0):
        data, got = jpeg_at_bpp(img, target)
        assert got == bits_per_pixel(len(data), img.width * img.height)
        best = min(abs(b - target) for b in all_bpp)
        assert abs(got - target) <= best + 0.05  # the search may stop one quality away from the best
    assert Image.open(io.BytesIO(data)).format == "JPEG"
