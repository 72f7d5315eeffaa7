"""A trained codec made wider without changing what it computes (Net2Net's widening, for GDN).

A scale hyperprior of width N becomes a `slim-hyperprior` of width f·N whose hyper path is
the original one (64 channels stay 64): every channel of ``g_a`` / ``g_s`` is copied f times,
and the layer that reads the copies splits each weight among them (shares 1/f + ε that sum
to one, so the sum is exactly the original's while the copies receive different gradients
and can drift apart). GDN's ``gamma`` is split the same way over its squared inputs. Training
then starts from the narrow codec's rate and distortion instead of from scratch — what makes
a wide codec trainable on a CPU.
"""

from __future__ import annotations

import torch
from compressai.layers import GDN
from torch import nn

from pipeline.codec.checkpoint import CDF_BUFFERS
from pipeline.codec.registry import SlimHyperprior
from pipeline.errors import ConfigError


def _shares(shape: tuple[int, ...], f: int, gen: torch.Generator, noise: float) -> torch.Tensor:
    """``[f, *shape]`` shares that sum to one over the first axis: 1/f + zero-mean noise."""
    e = (torch.rand((f, *shape), generator=gen, dtype=torch.float64) * 2 - 1) * noise / f
    return (1.0 / f + e - e.mean(0, keepdim=True)).float()


def _conv(old: nn.Module, new: nn.Module, gen: torch.Generator, noise: float) -> None:
    """Copy output channels; split weights over copied input channels."""
    w = old.weight.detach()
    if isinstance(old, nn.ConvTranspose2d):  # [in, out, k, k]
        w = w.transpose(0, 1)
    o_f = new.out_channels // old.out_channels
    i_f = new.in_channels // old.in_channels
    w = w.repeat(o_f, 1, 1, 1)  # output channel c is old channel c mod N
    if i_f > 1:
        shares = _shares(tuple(w.shape), i_f, gen, noise)
        w = torch.cat([w * shares[k] for k in range(i_f)], 1)
    if isinstance(new, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    new.weight.data.copy_(w)
    new.bias.data.copy_(old.bias.detach().repeat(o_f))


def _gdn(old: GDN, new: GDN, gen: torch.Generator, noise: float) -> None:
    f = new.beta.shape[0] // old.beta.shape[0]
    beta = old.beta_reparam(old.beta).detach().repeat(f)
    gamma = old.gamma_reparam(old.gamma).detach().repeat(f, 1)  # rows: output channels
    shares = _shares(tuple(gamma.shape), f, gen, noise)
    gamma = torch.cat([gamma * shares[k] for k in range(f)], 1).clamp_min(0)
    new.beta.data.copy_(new.beta_reparam.init(beta))
    new.gamma.data.copy_(new.gamma_reparam.init(gamma))


@torch.no_grad()
def widen(model: nn.Module, N: int, seed: int = 0, noise: float = 0.1) -> SlimHyperprior:
    """``model`` (a scale hyperprior of width N₀) as a `SlimHyperprior` of width ``N`` (a
    multiple of N₀) that computes the same ``x̂`` and likelihoods (to float rounding)."""
    n0 = int(model.g_a[0].out_channels)
    if N % n0 or N < n0:
        raise ConfigError(f"--N {N} must be a multiple of the codec's width {n0}")
    hyper = int(model.h_s[0].in_channels)
    wide = SlimHyperprior(N, int(model.M), hyper=hyper)
    for name in ("h_a", "h_s", "entropy_bottleneck", "gaussian_conditional"):
        # learned tensors only: CDF tables are rebuilt when the wide codec is finalized
        sd = {k: v for k, v in getattr(model, name).state_dict().items()
              if k.rsplit(".", 1)[-1] not in (*CDF_BUFFERS, "scale_table")}
        getattr(wide, name).load_state_dict(sd, strict=False)
    gen = torch.Generator().manual_seed(seed)
    for part in ("g_a", "g_s"):
        for old, new in zip(getattr(model, part), getattr(wide, part), strict=True):
            if isinstance(old, nn.Conv2d | nn.ConvTranspose2d):
                _conv(old, new, gen, noise)
            elif isinstance(old, GDN):
                _gdn(old, new, gen, noise)
            else:
                raise ConfigError(f"{part}: cannot widen a {type(old).__name__}")
    return wide
