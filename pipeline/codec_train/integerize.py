"""From a trained float codec to one with an integer ``h_s``: quantise, fine-tune, measure.

1. Calibrate: the frozen encoder (``g_a``, ``h_a``) turns random crops of the training photos
   into (y, z symbols) pairs.
2. Post-training quantisation (``quantize.post_training_quantisation``): per-channel
   activation scales from the calibration symbols, integer kernels, biases and divisors
   within the exactness bound.
3. Fine-tune ``h_s`` alone against the frozen encoder with the rate of y as the only loss:
   the integer network's forward pass with straight-through rounding (kernels, biases,
   requantisation), so what is trained is exactly what is then frozen into integers.
4. Measure the rate cost: real bitstreams of the same images with the float ``h_s`` and the
   integer one (same g_a, same z; for scale-only models the same ŷ symbols).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.codec import checkpoint, integer
from pipeline.codec.checkpoint import Checkpoint
from pipeline.codec.registry import MEAN_SCALE_HYPERPRIOR, SCALE_HYPERPRIOR, get_architecture
from pipeline.codec_train import quantize
from pipeline.codec_train.crops import CropSampler, read_rgb
from pipeline.errors import CodecError


@dataclass(frozen=True)
class IntegerizeConfig:
    crops: int = 256  # calibration / fine-tuning crops
    patch: int = 256
    steps: int = 1500  # fine-tuning steps (0: quantisation only)
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    threads: int = 0


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class _QatHS(torch.nn.Module):
    """The integer network with float master weights: forward = the integer computation, with
    straight-through gradients through every rounding (divisors and activation scales fixed)."""

    def __init__(self, layers: list[integer.FloatLayer], scales: list[torch.Tensor],
                 ints: list[integer.IntLayer], in_clip: int):
        super().__init__()
        self.specs = [(lay.upsample, ints[i].act, ints[i].leak, ints[i].lo, ints[i].hi)
                      for i, lay in enumerate(layers)]
        # float32 is enough here: training need not be exact, only the frozen result is
        self.kernels = torch.nn.ParameterList([torch.nn.Parameter(lay.kernel.float().clone())
                                               for lay in layers])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(lay.bias.float().clone())
                                              for lay in layers])
        self.scales = [s.float() for s in scales]
        self.divisors = [i.divisor.float() for i in ints]
        self.in_clip = in_clip
        self.ones_input = layers[0].ones_input

    def effective(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s_in = self.scales[i - 1] if i else torch.ones(self.kernels[0].shape[1])
        k, b = quantize.rescaled(self.kernels[i], self.biases[i], self.scales[i], s_in, self.specs[i][0])
        d = self.divisors[i]
        return k * d.view(-1, 1, 1, 1), b * d

    def forward(self, z_sym: torch.Tensor) -> torch.Tensor:
        x = z_sym.float().clamp(-self.in_clip, self.in_clip)
        if self.ones_input:
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        for i, (up, act, leak, lo, hi) in enumerate(self.specs):
            k, b = self.effective(i)
            v = F.conv2d(x, _ste_round(k), _ste_round(b), padding=1)
            d = self.divisors[i].view(1, -1, 1, 1)
            q = v / d
            if act == "leaky":
                q = torch.where(v >= 0, q, q / leak)
            q = _ste_round(q).clamp(lo, hi)
            x = F.pixel_shuffle(q, up) if up > 1 else q
        return x

    def to_float_layers(self) -> list[integer.FloatLayer]:
        return [integer.FloatLayer(k.detach().double(), b.detach().double(), up, act, leak,
                                   ones_input=self.ones_input and i == 0)
                for i, (k, b, (up, act, leak, _, _)) in enumerate(zip(self.kernels, self.biases, self.specs,
                                                                      strict=True))]


def _gaussian_bits(values: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """-log2 P(value) of integer-binned values under N(0, σ) (CompressAI's likelihood)."""
    v = values.abs()
    c = 1 / math.sqrt(2)
    upper = 0.5 * torch.erfc(-c * (0.5 - v) / sigma)
    lower = 0.5 * torch.erfc(-c * (-0.5 - v) / sigma)
    return -torch.log2((upper - lower).clamp_min(1e-9))


def calibration_pairs(model: torch.nn.Module, family: str, images: list[torch.Tensor], cfg: IntegerizeConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, z symbols, image number) of ``cfg.crops`` random crops (with flips) of ``images``,
    through the frozen encoder."""
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().double()
    ys, zs, ids = [], [], []
    usable = [i for i, im in enumerate(images) if min(im.shape[1:]) >= cfg.patch]
    if not usable:
        raise CodecError(f"no calibration image is at least {cfg.patch}px on its shorter side")
    sampler = CropSampler([images[i] for i in usable], cfg.patch, (1.0,), cfg.seed)
    with torch.no_grad():
        for start in range(0, cfg.crops, 8):
            batch = []
            for _ in range(min(8, cfg.crops - start)):
                crop, k = sampler.draw()
                batch.append(crop)
                ids.append(usable[k])
            x = torch.stack(batch)
            y = model.g_a(x)
            z = model.h_a(torch.abs(y) if family == SCALE_HYPERPRIOR else y)
            ys.append(y.double())
            zs.append(torch.round(z.double() - medians.view(1, -1, 1, 1)))
    return torch.cat(ys), torch.cat(zs), torch.tensor(ids)


def _rate_loss(out: torch.Tensor, y: torch.Tensor, m: int, mean: bool, scale_bound: float,
               gen: torch.Generator) -> torch.Tensor:
    """Bits per y element: σ = scale channels / 2^8 (lower-bounded as the coder does); for
    mean-scale models y − μ with additive uniform noise, else the exact symbols round(y)."""
    sigma = (out[:, :m] / (1 << integer.FIXED_BITS)).clamp_min(scale_bound)
    if mean:
        mu = out[:, m:] / (1 << integer.FIXED_BITS)
        noise = torch.rand(y.shape, generator=gen, dtype=y.dtype) - 0.5
        values = y - mu + noise
    else:
        values = torch.round(y)
    return _gaussian_bits(values, sigma).mean()


def integerize(ckpt: Checkpoint, images: list[torch.Tensor], cfg: IntegerizeConfig = IntegerizeConfig(),
               on_log: Callable[[dict], None] | None = None) -> Checkpoint:
    """``ckpt`` with an integer ``h_s`` (quantised, then fine-tuned on ``images``) added."""
    arch = get_architecture(ckpt.arch)
    if arch.family not in (SCALE_HYPERPRIOR, MEAN_SCALE_HYPERPRIOR):
        raise CodecError(f"{ckpt.arch} has no hyper-synthesis to make integer")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = checkpoint.build_model(ckpt)
    gc = model.gaussian_conditional
    scale_table = gc.scale_table.detach().cpu().numpy()
    scale_bound = float(gc.lower_bound_scale.bound.item())
    m = ckpt.M
    mean = arch.family == MEAN_SCALE_HYPERPRIOR
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().double()
    in_clip = z_input_clip(model)
    y, z, ids = calibration_pairs(model, arch.family, images, cfg)
    y, z = y.float(), z.float()
    n_mean = m if mean else 0

    layers, scales, ints = quantize.post_training_quantisation(model.h_s, medians, z, m, n_mean, in_clip)
    history: list[dict] = []
    if cfg.steps:
        ints, history = _fine_tune(layers, scales, ints, in_clip, y, z, ids, m, mean, scale_bound, cfg,
                                   on_log)
    hs = integer.IntegerHyperSynthesis(ints, in_clip, m, n_mean, scale_table, scale_bound,
                                       ones_input=layers[0].ones_input)
    meta = {**ckpt.metadata, "integer_h_s": {"method": "post-training quantisation + rate fine-tune",
                                             "config": asdict(cfg), "bounds": hs.bounds,
                                             "fine_tune": history}}
    return Checkpoint(ckpt.arch, ckpt.N, ckpt.M, ckpt.state_dict, ckpt.quality, ckpt.lmbda, meta,
                      integer_h_s=hs.state_dict())


def _fine_tune(layers, scales, ints, in_clip, y, z, ids, m, mean, scale_bound, cfg, on_log):
    """Rate-only fine-tuning of the integer network (straight-through), with early stopping on
    crops of photos it does not train on: every fifth calibration photo validates. Returns the
    best integer layers (the quantised start if nothing beats it) and the validation history."""
    n_mean = m if mean else 0
    val = (ids % 5) == 4
    if val.all() or not val.any():  # too few photos to split: validate on a slice of the crops
        val = torch.arange(len(ids)) % 8 == 7
    train_idx, val_idx = torch.nonzero(~val)[:, 0], torch.nonzero(val)[:, 0]
    qat = _QatHS(layers, scales, ints, in_clip)
    gen = torch.Generator().manual_seed(cfg.seed)

    def validate() -> float:
        g = torch.Generator().manual_seed(cfg.seed + 1)  # the same noise every time
        with torch.no_grad():
            return float(_rate_loss(qat(z[val_idx]), y[val_idx], m, mean, scale_bound, g))

    best, best_bits = ints, validate()
    history = [{"step": 0, "val_bits_per_y": best_bits}]
    opt = torch.optim.Adam(qat.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    acc = []
    for step in range(1, cfg.steps + 1):
        pick = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)]
        loss = _rate_loss(qat(z[pick]), y[pick], m, mean, scale_bound, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc.append(loss.item())
        if step % 100 == 0 or step == cfg.steps:
            bits = validate()
            history.append({"step": step, "train_bits_per_y": float(np.mean(acc)), "val_bits_per_y": bits})
            acc = []
            if on_log:
                on_log(history[-1])
            if bits < best_bits:
                cand = quantize.integerize_layers(qat.to_float_layers(), scales, in_clip, m, n_mean,
                                                 qat.divisors)
                in_max = [in_clip] + [max(abs(c.lo), abs(c.hi)) for c in cand[:-1]]
                if all(c.bound(a) < integer.EXACT_FP32 for c, a in zip(cand, in_max, strict=True)):
                    best, best_bits = cand, bits
    return best, history


def z_input_clip(model: torch.nn.Module) -> int:
    """The integer network's input clip: the widest symbol range the z tables code directly."""
    eb = model.entropy_bottleneck
    lo = eb._offset.abs().max().item()
    hi = (eb._offset + eb._cdf_length - 2).abs().max().item()
    return int(max(lo, hi, 1)) + 1


def strip_integer(ckpt: Checkpoint) -> Checkpoint:
    """The same codec with its float ``h_s`` path (for rate comparisons)."""
    meta = {k: v for k, v in ckpt.metadata.items() if k != "integer_h_s"}
    return Checkpoint(ckpt.arch, ckpt.N, ckpt.M, ckpt.state_dict, ckpt.quality, ckpt.lmbda, meta)


def photo_tensors(holdout: bool | None = False) -> list[tuple[str, torch.Tensor]]:
    """(name, ``[3, H, W]`` in [0, 1]) of the bundled colour photos: the training ones
    (``holdout=False``), the held-out ones (True) or all (None)."""
    from pipeline.tasks.photos import bundled_photos

    return [(p.name, read_rgb(str(p.path))) for p in bundled_photos(colour_only=True)
            if holdout is None or p.holdout == holdout]


@dataclass(frozen=True)
class RateCost:
    image: str
    pixels: int
    float_bytes: int  # containers written with the float64 h_s
    integer_bytes: int  # the same images with the integer h_s

    @property
    def cost(self) -> float:
        """Relative rate increase of the integer h_s."""
        return self.integer_bytes / self.float_bytes - 1


def total_cost(rows: list[RateCost]) -> float:
    """Relative rate increase of the integer h_s over all of ``rows``' bytes."""
    return sum(r.integer_bytes for r in rows) / sum(r.float_bytes for r in rows) - 1


def rate_costs(float_codec, integer_codec, images: list[tuple[str, torch.Tensor]]) -> list[RateCost]:
    """Real container bytes of each image (padded to the codec's multiple) under both codecs."""
    out = []
    for name, img in images:
        h, w = img.shape[1:]
        m = float_codec.arch.multiple
        x = F.pad(img[None], (0, -w % m, 0, -h % m), mode="replicate")
        sizes = [len(c.encode(x, [(h, w)])[0].data) for c in (float_codec, integer_codec)]
        out.append(RateCost(name, h * w, *sizes))
    return out
