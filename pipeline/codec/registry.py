"""One registry of CompressAI architectures, keyed by stable names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN, GDN1
from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from compressai.models.utils import conv, deconv
from compressai.zoo import bmshj2018_factorized, bmshj2018_hyperprior, mbt2018_mean
from compressai.zoo.image import cfgs
from torch import nn

from pipeline.errors import CodecError

#: Families decide how a bitstream is laid out (see pipeline.codec.coder).
FACTORIZED = "factorized"  # y ~ EntropyBottleneck; one string
SCALE_HYPERPRIOR = "scale-hyperprior"  # z ~ EntropyBottleneck, y ~ N(0, h_s(z)); two strings
MEAN_SCALE_HYPERPRIOR = "mean-scale-hyperprior"  # y ~ N(mu, sigma) from h_s(z); two strings


#: Pixels per latent cell (one y element) along each side: the geometry every registered
#: codec's g_a has, and the one place it is defined (the loader's windows, the boxes and
#: masks it carries, the detection models' anchors and the pixel baselines all follow it).
CELL = 16


class SlimHyperprior(ScaleHyperprior):
    """Ballé et al.'s scale hyperprior with the main transforms ``g_a`` / ``g_s`` of width N and
    the hyper path (``h_a``, z, ``h_s``) of a fixed width ``hyper``: capacity goes where the
    pixels are, while ``h_s``, which every ŷ decode runs, stays as slim as the default's."""

    #: The non-linearity between g_a's / g_s's convolutions: "gdn" (Ballé's GDN and its
    #: inverse), "sgdn" (Johnston et al. 2019's simplified GDN: |x| for x², no square root,
    #: the same N² multiply-adds per position) or "relu" (no multiply-adds, no parameters).
    nonlinearity = "gdn"

    def __init__(self, N: int, M: int, hyper: int = 64, **kwargs):
        super().__init__(N, M, **kwargs)
        if self.nonlinearity != "gdn":  # the same module indices, so checkpoints read alike
            for seq, inverse in ((self.g_a, False), (self.g_s, True)):
                for i, layer in enumerate(seq):
                    if isinstance(layer, GDN):
                        seq[i] = GDN1(N, inverse=inverse) if self.nonlinearity == "sgdn" else nn.ReLU()
        self.entropy_bottleneck = EntropyBottleneck(hyper)
        self.h_a = nn.Sequential(conv(M, hyper, stride=1, kernel_size=3), nn.ReLU(inplace=True),
                                 conv(hyper, hyper), nn.ReLU(inplace=True), conv(hyper, hyper))
        self.h_s = nn.Sequential(deconv(hyper, hyper), nn.ReLU(inplace=True), deconv(hyper, hyper),
                                 nn.ReLU(inplace=True), conv(hyper, M, stride=1, kernel_size=3),
                                 nn.ReLU(inplace=True))


class SlimHyperpriorSGDN(SlimHyperprior):
    nonlinearity = "sgdn"


class SlimHyperpriorReLU(SlimHyperprior):
    nonlinearity = "relu"


def _no_zoo(*args, **kwargs):
    raise CodecError("this architecture has no CompressAI zoo weights: train it (`latents train-codec`)")


@dataclass(frozen=True)
class Architecture:
    """A CompressAI model class with its zoo entry and the stable name datasets record."""

    name: str
    family: str
    model_cls: type
    zoo_fn: Callable
    qualities: dict[int, tuple[int, int]]  # quality -> (N, M), CompressAI's table
    multiple: int = 64  # inputs are padded to this multiple (g_a /16, h_a /4)
    downsample: int = CELL  # pixels per y element along each side
    hyper: int | None = None  # the hyper path's width when it is not N (`SlimHyperprior`)

    def build(self, N: int, M: int) -> torch.nn.Module:
        if N <= 0 or M <= 0:
            raise CodecError(f"{self.name}: N and M must be positive, got N={N}, M={M}")
        return self.model_cls(N, M, self.hyper) if self.hyper else self.model_cls(N, M)

    def z_channels(self, N: int) -> int:
        """Channels of z (the hyper latent): the hyper path's width."""
        return self.hyper or N

    def channels(self, quality: int) -> tuple[int, int]:
        if quality not in self.qualities:
            raise CodecError(
                f"{self.name}: quality {quality} is not one of {sorted(self.qualities)}; "
                "or give N and M explicitly"
            )
        return self.qualities[quality]

    @staticmethod
    def infer_channels(state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(N, M) read off the weights of g_a, the same way for all registered models."""
        try:
            return int(state_dict["g_a.0.weight"].shape[0]), int(state_dict["g_a.6.weight"].shape[0])
        except KeyError as exc:
            raise CodecError(
                f"state dict has no {exc.args[0]!r}: not a CompressAI image-codec checkpoint"
            ) from None


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "bmshj2018-factorized", FACTORIZED, FactorizedPrior, bmshj2018_factorized,
            cfgs["bmshj2018-factorized"],
        ),
        Architecture(
            "bmshj2018-hyperprior", SCALE_HYPERPRIOR, ScaleHyperprior, bmshj2018_hyperprior,
            cfgs["bmshj2018-hyperprior"],
        ),
        Architecture(
            "mbt2018-mean", MEAN_SCALE_HYPERPRIOR, MeanScaleHyperprior, mbt2018_mean,
            cfgs["mbt2018-mean"],
        ),
        Architecture(
            "slim-hyperprior", SCALE_HYPERPRIOR, SlimHyperprior, _no_zoo,
            cfgs["bmshj2018-hyperprior"], hyper=64,
        ),
        Architecture(
            "slim-hyperprior-sgdn", SCALE_HYPERPRIOR, SlimHyperpriorSGDN, _no_zoo,
            cfgs["bmshj2018-hyperprior"], hyper=64,
        ),
        Architecture(
            "slim-hyperprior-relu", SCALE_HYPERPRIOR, SlimHyperpriorReLU, _no_zoo,
            cfgs["bmshj2018-hyperprior"], hyper=64,
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise CodecError(
            f"unknown codec architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None
