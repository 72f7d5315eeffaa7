"""Forward and backward over every registry entry (a new model is tested by registering it)."""

import pytest
import torch

from pipeline.models.registry import MODELS, create_model

CLASSIFIERS = sorted(n for n, s in MODELS.items() if s.task == "classify")


@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if n.endswith(("18", "50"))])
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
@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if n.endswith(("34", "101"))])
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


TASK_MODELS = sorted(n for n, s in MODELS.items() if s.task != "classify")


@pytest.mark.parametrize("name", [n for n in TASK_MODELS if n.endswith("18")])
def test_detection_and_segmentation_entries_train(name):
    """Faster R-CNN: its losses on a batch with a box and one without; DeepLabV3: per-pixel
    cross-entropy. Every trainable parameter that the loss reaches gets a finite gradient."""
    torch.manual_seed(0)
    latent = MODELS[name].input == "latent"
    x = torch.randn(2, 24, 6, 6) if latent else torch.rand(2, 3, 96, 96)
    kw = {"window_px": 96} if MODELS[name].task == "detect" else {}
    model = create_model(name, in_channels=24 if latent else 3, num_classes=3, **kw).train()
    if MODELS[name].task == "detect":
        targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
                   {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
        loss = sum(model(x, targets).values())
    else:
        out = model(x)
        assert out.shape == (2, 3, 96, 96)
        loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 96, 96)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
