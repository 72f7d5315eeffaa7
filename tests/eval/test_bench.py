"""The profiles time what they say, per image: checked with a clock the test controls."""

import types

import pytest
import torch

import pipeline.eval.bench as bench
from pipeline.eval.bench import imagenet_like_jpegs, profile_encode


class FakeClock:
    """perf_counter that moves only when the test says work happened."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1e3


@pytest.fixture()
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=c.perf_counter))
    return c


class _TimedModule(torch.nn.Module):
    def __init__(self, inner, clock, ms):
        super().__init__()
        self.inner, self.clock, self.ms = inner, clock, ms

    def forward(self, x):
        self.clock.spend(self.ms * x.shape[0])
        return self.inner(x)


class Timed:
    """The codec, with each timed stage costing a known number of milliseconds per image."""

    def __init__(self, codec, clock, g_a=2.0, encode=7.0, decode=3.0):
        self.codec, self.clock, self.cost = codec, clock, {"g_a": g_a, "encode": encode, "decode": decode}
        self.arch = codec.arch
        self.model = types.SimpleNamespace(g_a=_TimedModule(codec.model.g_a, clock, g_a))

    def encode(self, x, hw):
        self.clock.spend(self.cost["encode"] * x.shape[0])
        return self.codec.encode(x, hw)

    def decode_y(self, blob, **kw):
        self.clock.spend(self.cost["decode"])
        return self.codec.decode_y(blob, **kw)

    def __getattr__(self, name):
        return getattr(self.codec, name)


def test_encode_profile_times_each_stage_per_image(default_codec, clock):
    jpegs = imagenet_like_jpegs()[:4]
    p = profile_encode(Timed(default_codec, clock), jpegs, threads=1, batch=2, reps=3)
    assert p.image_hw == (256, 384)  # 500x375 -> 341x256, padded to a multiple of 64
    assert (p.g_a_ms, p.encode_ms, p.decode_y_ms) == pytest.approx((2.0, 7.0, 3.0))
    assert p.to_json()["entropy_ms"] == pytest.approx(5.0)  # encode beyond g_a
    assert p.prepare_ms == 0.0  # nothing was spent preparing
    assert 0.5 < p.g_a_gmac < 2.0  # N=64 M=96 at 256x384


def test_decode_profile_sets_decoding_beside_jpeg(default_codec, clock, monkeypatch):
    real_open = bench.Image.open

    def pil_open(*a, **kw):  # a JPEG decode costs 0.5 ms here
        clock.spend(0.5)
        return real_open(*a, **kw)

    monkeypatch.setattr(bench.Image, "open", pil_open)
    d = bench.profile_decode(Timed(default_codec, clock), imagenet_like_jpegs()[:3], reps=1)
    assert d.images == 3 and d.image_hw == (256, 341) and d.fast_decoder
    assert d.jpeg_ms == pytest.approx(0.5) and d.decode_y_ms == pytest.approx(3.0)
    assert d.decode_y_reference_ms == pytest.approx(3.0)
    assert d.to_json()["decode_over_jpeg"] == pytest.approx(6.0)
    assert d.entropy_params == default_codec.entropy_params
