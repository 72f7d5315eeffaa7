"""Widening a trained codec (Net2Net for GDN): the wider slim-hyperprior computes what the
narrow codec computes, its copies can drift apart, and train-codec starts from it."""

import dataclasses

import pytest
import torch

from pipeline.codec import checkpoint
from pipeline.codec_train.train import CodecTrainConfig, train_codec
from pipeline.codec_train.widen import widen
from pipeline.errors import ConfigError
from tests.conftest import tiny_checkpoint


def test_a_widened_codec_computes_what_the_narrow_one_does():
    narrow = checkpoint.build_model(tiny_checkpoint("bmshj2018-hyperprior", N=16, M=24))
    wide = widen(narrow, 48).eval()
    assert wide.g_a[0].out_channels == 48 and wide.g_s[-1].in_channels == 48
    assert wide.h_s[0].in_channels == 16  # the hyper path is the narrow codec's
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
    for k in ("y", "z"):
        assert torch.allclose(a["likelihoods"][k], b["likelihoods"][k], atol=1e-6)
    w = wide.g_a[2].weight  # channel 0's three copies read the same input with other shares
    assert not torch.equal(w[:, 0], w[:, 16]) and torch.allclose(w[:, 0] + w[:, 16] + w[:, 32],
                                                               narrow.g_a[2].weight[:, 0].repeat(3, 1, 1),
                                                               atol=1e-6)
    with pytest.raises(ConfigError, match="multiple"):
        widen(narrow, 40)


def test_train_codec_starts_from_the_widened_codec(tmp_path):
    src = tmp_path / "narrow.pt"
    checkpoint.save(tiny_checkpoint("bmshj2018-hyperprior", N=16, M=24), str(src))
    cfg = CodecTrainConfig(out=str(tmp_path / "wide.pt"), arch="slim-hyperprior", N=32, M=24, steps=2,
                           batch_size=2, patch=64, threads=1, widen_from=str(src), max_side=256)
    train_codec(cfg, on_log=lambda d: None)
    ck = checkpoint.read(str(tmp_path / "wide.pt"))
    assert ck.arch == "slim-hyperprior" and (ck.N, ck.M) == (32, 24)
    assert "--widen-from" in ck.metadata["command"]
    with pytest.raises(ConfigError, match="slim-hyperprior"):
        dataclasses.replace(cfg, arch="bmshj2018-hyperprior")
