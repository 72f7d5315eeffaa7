"""Post-training quantisation of a float ``h_s`` into the integer layers of
`pipeline.codec.integer`: per-channel activation scales calibrated on z symbols, scales
lowered until every layer keeps its exactness bound, and the largest divisors that do.

Building an integer ``h_s`` is codec training; running one is the runtime codec's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.codec.integer import (
    ACT_MAX,
    EXACT_FP32,
    FIXED_BITS,
    MEAN_MAX,
    SCALE_MAX,
    FloatLayer,
    IntLayer,
    float_layers,
)
from pipeline.errors import CodecError


def fold_medians(first: FloatLayer, medians: torch.Tensor) -> FloatLayer:
    """The first layer on z symbols instead of ẑ = symbols + medians: an extra all-ones input
    channel whose kernel is Σ_c kernel[:, c]·median_c, so padding drops it exactly where it
    drops ẑ's taps (the same function as on ẑ, borders included)."""
    k = first.kernel.double()
    extra = (k * medians.double().view(1, -1, 1, 1)).sum(1, keepdim=True)
    return FloatLayer(torch.cat([k, extra], 1), first.bias.double(), first.upsample, first.act, first.leak,
                      ones_input=True)


@torch.no_grad()
def activation_scales(layers: list[FloatLayer], z_sym: torch.Tensor,
                      quantile: float = 0.9999) -> list[torch.Tensor]:
    """Per-channel activation scales of the hidden layers (ACT_MAX / the ``quantile``-th
    activation over the calibration symbols): hidden activation c is held as round(a·s_c)."""
    x = z_sym.double()
    out = []
    for lay in layers[:-1]:
        x = lay.forward(x)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1).abs()
        k = max(1, int(math.ceil(quantile * flat.shape[1])))
        top = flat.kthvalue(k, dim=1).values if flat.shape[1] else torch.zeros(x.shape[1])
        # a near-silent channel gets the resolution of one 100x quieter than the loudest
        top = torch.maximum(top, 1e-2 * top.max()).clamp_min(1e-6)
        out.append(ACT_MAX / top)
    return out


def rescaled(kernel: torch.Tensor, bias: torch.Tensor, s_out: torch.Tensor, s_in: torch.Tensor,
             upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's kernel and bias in output-activation units per input-activation unit:
    ``K·s_out/s_in`` and ``b·s_out`` (``s_out`` per output channel before the pixel shuffle,
    ``s_in`` per input channel); times the divisor D they are the integer kernel and bias."""
    s = s_out.repeat_interleave(upsample ** 2)
    return kernel * s.view(-1, 1, 1, 1) / s_in.view(1, -1, 1, 1), bias * s


def fit_scales(layers: list[FloatLayer], scales: list[torch.Tensor], in_clip: int,
               limit: int = EXACT_FP32 - 1) -> list[torch.Tensor]:
    """Lower the activation scale of any hidden channel whose layer could not keep its bound
    below ``limit`` even with divisor 2 (so every channel keeps at least one bit of divisor)."""
    scales = [s.clone().double() for s in scales]
    s_in, in_max = torch.ones(layers[0].kernel.shape[1], dtype=torch.float64), in_clip
    for i, lay in enumerate(layers[:-1]):
        r2 = lay.upsample ** 2
        k_eff, b_eff = rescaled(lay.kernel.double(), lay.bias.double(), scales[i], s_in, lay.upsample)
        mass = k_eff.abs().flatten(1).sum(1) * in_max + b_eff.abs()
        slack = 0.5 * (lay.kernel.flatten(1) != 0).sum(1) * in_max + 0.5
        factor = ((limit - slack) / (2 * mass.clamp_min(1e-30))).clamp(max=1.0)
        scales[i] = scales[i] * factor.view(-1, r2).min(1).values
        s_in, in_max = scales[i], ACT_MAX
    return scales


def divisors_for(kernel_eff: torch.Tensor, bias_eff: torch.Tensor, in_max: int,
                 limit: int = EXACT_FP32 - 1) -> torch.Tensor:
    """The largest per-channel divisors D whose rounded kernels round(K·D) and biases keep the
    layer's bound below ``limit`` (D >= 1; a channel that cannot is left at 1 and shows up in the
    bound check)."""
    mass = kernel_eff.abs().flatten(1).sum(1) * in_max + bias_eff.abs()
    slack = 0.5 * (kernel_eff.flatten(1) != 0).sum(1) * in_max + 0.5
    d = torch.floor((limit - slack) / mass.clamp_min(1e-30)).clamp(1, 2**40)
    for _ in range(64):
        k = torch.round(kernel_eff * d.view(-1, 1, 1, 1))
        b = torch.round(bias_eff * d)
        over = (k.abs().flatten(1).sum(1) * in_max + b.abs()) > limit
        if not over.any() or (d[over] <= 1).all():
            break
        d = torch.where(over & (d > 1), torch.floor(d * 0.999), d)
    return d


def integerize_layers(layers: list[FloatLayer], scales: list[torch.Tensor], in_clip: int,
                      scale_channels: int, mean_channels: int,
                      divisors: list[torch.Tensor] | None = None) -> list[IntLayer]:
    """Integer layers from float ones: ``H = round(K·s_out/s_in·D)``, ``B = round(b·s_out·D)``.

    ``scales[i]`` is layer i's per-output-channel scale (before the pixel shuffle); the input of
    layer 0 is the integer z symbols (scale 1). ``divisors`` (from an earlier call) keeps D."""
    out, s_in, in_max = [], torch.ones(layers[0].kernel.shape[1], dtype=torch.float64), in_clip
    for i, lay in enumerate(layers):
        last = i == len(layers) - 1
        k_eff, b_eff = rescaled(lay.kernel.double(), lay.bias.double(), scales[i].double(), s_in,
                                lay.upsample)
        d = divisors[i] if divisors is not None else divisors_for(k_eff, b_eff, in_max)
        kernel = torch.round(k_eff * d.view(-1, 1, 1, 1)).long()
        bias = torch.round(b_eff * d).long()
        if last:
            if lay.act not in ("relu", "none"):
                raise CodecError("the last h_s layer must be linear or ReLU")
            # with means, one clip range serves both halves: the σ lookup clamps its own part
            lo, hi = (0, SCALE_MAX) if not mean_channels else (-MEAN_MAX, MEAN_MAX)
            act, leak = "none", 0
        else:
            act, leak = lay.act, lay.leak
            lo, hi = (0, ACT_MAX) if act == "relu" else (-ACT_MAX, ACT_MAX)
        out.append(IntLayer(kernel, bias, d.long(), lay.upsample, act, leak, lo, hi))
        s_in, in_max = scales[i].double(), max(abs(lo), abs(hi))
    return out


def post_training_quantisation(h_s: nn.Module, medians: torch.Tensor, z_sym: torch.Tensor,
                               scale_channels: int, mean_channels: int, in_clip: int
                               ) -> tuple[list[FloatLayer], list[torch.Tensor], list[IntLayer]]:
    """A float ``h_s`` as integer layers, calibrated on the z symbols ``z_sym``: the float layers
    (medians folded in), each layer's per-channel output scales, and the integer layers."""
    layers = float_layers(h_s)
    layers[0] = fold_medians(layers[0], medians)
    n_out = layers[-1].kernel.shape[0] // layers[-1].upsample ** 2
    if n_out != scale_channels + mean_channels:
        raise CodecError(f"h_s gives {n_out} channels, expected {scale_channels} + {mean_channels}")
    last = torch.full((n_out,), float(1 << FIXED_BITS), dtype=torch.float64)
    scales = [*activation_scales(layers, z_sym.double().clamp(-in_clip, in_clip)), last]
    scales = fit_scales(layers, scales, in_clip)
    return layers, scales, integerize_layers(layers, scales, in_clip, scale_channels, mean_channels)
