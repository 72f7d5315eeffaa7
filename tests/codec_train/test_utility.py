"""Eq. 6: the task loss reaches the encoder, and only through ŷ."""

import pytest
import torch

from pipeline.codec.registry import get_architecture
from pipeline.codec_train.utility import (
    NOISE,
    STRAIGHT_THROUGH,
    ClassifyHead,
    quantise_for_task,
    rdu_loss,
)
from pipeline.errors import ConfigError


def _model():
    torch.manual_seed(0)
    return get_architecture("bmshj2018-hyperprior").build(16, 24).train()


def _trained():
    """The bundled default codec, training mode: its ŷ spreads over many integers (an untrained
    g_a's output rounds to all zeros, where a head's input gradient vanishes)."""
    from pipeline.codec.load import CodecSpec, load_codec

    return load_codec(CodecSpec()).model.train()


@pytest.mark.parametrize("mode", [NOISE, STRAIGHT_THROUGH])
def test_the_task_loss_reaches_g_a_and_nothing_the_task_does_not_use(mode):
    from tests.conftest import photo_crops

    model = _trained()
    head = ClassifyHead(96, ("a", "b", "c"))
    x, xt = photo_crops(2, 64), photo_crops(3, 64, seed=1)
    t = torch.tensor([0, 2, 1])
    terms = rdu_loss(model, x, 0.01, [(head, 10.0, xt, t)], mode)
    model.zero_grad()
    terms.task.backward()  # the utility term alone
    g_a = [p.grad for p in model.g_a.parameters()]
    assert all(g is not None for g in g_a) and sum(float(g.abs().sum()) for g in g_a) > 0
    assert all(p.grad is None for p in model.g_s.parameters())  # no reconstruction in the task path
    assert all(p.grad is None for p in model.h_s.parameters())  # nor the entropy model
    assert all(p.grad is not None for p in head.parameters())


def test_without_tasks_it_is_the_rate_distortion_loss():
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    head = ClassifyHead(24, ("a", "b"))
    torch.manual_seed(1)
    with_task = rdu_loss(model, x, 0.01, [(head, 0.0, x, torch.tensor([0, 1]))])
    torch.manual_seed(1)
    plain = rdu_loss(model, x, 0.01)
    assert float(plain.task) == 0.0
    assert torch.allclose(with_task.loss, plain.loss)
    assert torch.allclose(plain.loss, plain.bpp + 0.01 * 255**2 * plain.mse)


def test_straight_through_rounds_forward_and_passes_gradients():
    y = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    q = quantise_for_task(y, STRAIGHT_THROUGH)
    assert q.tolist() == [0.0, 2.0, -2.0]
    q.sum().backward()
    assert y.grad.tolist() == [1.0, 1.0, 1.0]
    n = quantise_for_task(torch.zeros(10000), NOISE)
    assert float(n.abs().max()) <= 0.5 and abs(float(n.mean())) < 0.02
    with pytest.raises(ConfigError):
        quantise_for_task(y, "round")
    with pytest.raises(ConfigError, match="latent model"):
        ClassifyHead(24, ("a", "b"), arch="resnet18")
