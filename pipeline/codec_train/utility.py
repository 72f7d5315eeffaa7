"""Rate–distortion–utility training (the seed paper's Eq. 6): task heads on the quantised latent.

    L = R + λ_d · 255² · MSE(x, x̂) + Σ_t λ_t · L_t(h_t(ŷ), y_t)

R and the distortion come from a reconstruction batch; each task's loss from its own batch
(the seed draws them independently, with their own sizes), encoded by the same ``g_a``, so
the task loss reaches the encoder. During training ŷ is ``y`` plus uniform noise, or ``y``
rounded with a straight-through gradient; after training the task sees what the converter
stores.

A task head is anything with the `TaskHead` shape: a module with ``name`` and
``loss(y_hat, targets)``. `ClassifyHead` is an sResNet from ``pipeline.models``; a detection
head (Faster R-CNN on ŷ) takes the same place with box targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError

NOISE, STRAIGHT_THROUGH = "noise", "ste"


class TaskHead(Protocol):
    name: str

    def loss(self, y_hat: torch.Tensor, targets: Any) -> torch.Tensor:
        """The task's loss on a batch of quantised latents (a scalar)."""
        ...

    def parameters(self): ...


class ClassifyHead(nn.Module):
    """Image classification from ŷ: an sResNet (pixel-shuffle stem + ResNet) and cross-entropy."""

    name = "classify"

    def __init__(self, latent_channels: int, classes: tuple[str, ...], arch: str = "sresnet18"):
        super().__init__()
        from pipeline.models.registry import MODELS, create_model

        if MODELS.get(arch) is None or MODELS[arch].input != "latent":
            raise ConfigError(f"the classification head must be a latent model (sresnet*, cresnet*), "
                              f"not {arch!r}")
        if len(classes) < 2:
            raise ConfigError(f"a classification task needs at least 2 classes, got {list(classes)}")
        self.classes, self.arch = tuple(classes), arch
        self.net = create_model(arch, latent_channels, len(classes))

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.net(y_hat)

    def loss(self, y_hat: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(y_hat), targets)


class DetectHead(nn.Module):
    """Object detection from ŷ: Faster R-CNN (FPN over an sResNet trunk) and its summed
    losses; targets are the loader's dicts (boxes in window pixels, labels, difficult, crowd)."""

    name = "detect"

    def __init__(self, latent_channels: int, classes: tuple[str, ...], arch: str = "fasterrcnn-sresnet18",
                 window_px: int = 128):
        super().__init__()
        from pipeline.models.registry import MODELS, create_model

        spec = MODELS.get(arch)
        if spec is None or spec.input != "latent" or spec.task != "detect":
            raise ConfigError(f"the detection head is a latent detector (fasterrcnn-sresnet*), not {arch!r}")
        if not classes:
            raise ConfigError("a detection task needs at least one class")
        self.classes, self.arch = tuple(classes), arch
        self.net = create_model(arch, latent_channels, len(classes), window_px=window_px)

    def loss(self, y_hat: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        from pipeline.train.detect import trainable  # difficult and crowd boxes are not learnt

        self.net.train()
        return sum(self.net(y_hat, [trainable(t, None, y_hat.device) for t in targets]).values())


def quantise_for_task(y: torch.Tensor, mode: str) -> torch.Tensor:
    """ŷ as a task sees it while training: additive uniform noise, or straight-through rounding."""
    if mode == NOISE:
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    if mode == STRAIGHT_THROUGH:
        return y + (torch.round(y) - y).detach()
    raise ConfigError(f"task quantisation is {NOISE!r} or {STRAIGHT_THROUGH!r}, not {mode!r}")


@dataclass(frozen=True)
class RDUTerms:
    loss: torch.Tensor
    bpp: torch.Tensor
    mse: torch.Tensor
    task: torch.Tensor  # λ_t-weighted sum of the task losses (0 without tasks)


def bits_per_pixel(likelihoods: dict, n: int, h: int, w: int) -> torch.Tensor:
    """The rate term: −log₂ of every latent's likelihood (y and z), per pixel."""
    return sum(torch.log(v).sum() for v in likelihoods.values()) / (-math.log(2) * n * h * w)


def rdu_loss(model: nn.Module, x: torch.Tensor, lmbda_d: float,
             tasks: list[tuple[TaskHead, float, torch.Tensor, Any]] = (), mode: str = NOISE) -> RDUTerms:
    """Eq. 6 on one step: ``x`` is the reconstruction batch; each task is (head, λ_t, its own
    image batch, its targets). With no task this is the rate–distortion loss."""
    out = model(x)
    n, _, h, w = x.shape
    bpp = bits_per_pixel(out["likelihoods"], n, h, w)
    mse = F.mse_loss(out["x_hat"], x)
    task = torch.zeros((), device=x.device)
    for head, lmbda_t, xt, targets in tasks:
        task = task + lmbda_t * head.loss(quantise_for_task(model.g_a(xt), mode), targets)
    return RDUTerms(bpp + lmbda_d * 255**2 * mse + task, bpp, mse, task)
