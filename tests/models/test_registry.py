"""Forward and backward over every registry entry (a new model is tested by registering it)."""

import pytest
import torch

from pipeline.models.registry import MODELS, create_model


@pytest.mark.parametrize("name", sorted(n for n in MODELS if n.endswith(("18", "50"))))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=24, num_classes=5)
    x = torch.randn(2, 24, 14, 14) if MODELS[name].input == "latent" else torch.randn(2, 3, 112, 112)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n in MODELS if n.endswith(("34", "101"))))
def test_forward_backward_deep(name):
    test_forward_backward(name)


@pytest.mark.parametrize("shuffles, size", [(2, 56), (1, 28)])
def test_sresnet_stem_resolution(shuffles, size):
    m = create_model("sresnet18", 96, 3, shuffles=shuffles)
    assert m.entry(torch.randn(1, 96, 14, 14)).shape == (1, 64, size, size)


@pytest.mark.parametrize("opts", [{"residual": False}, {"activation": "silu"}, {"activation": "mish"}])
def test_stem_ablation_options_build(opts):
    assert create_model("sresnet18", 8, 2, **opts)(torch.randn(1, 8, 4, 4)).shape == (1, 2)


def test_unknown_model_and_bad_stem():
    with pytest.raises(ValueError, match="choose one of"):
        create_model("vgg", 8, 2)
    with pytest.raises(ValueError, match="activation"):
        create_model("sresnet18", 8, 2, activation="tanh")
