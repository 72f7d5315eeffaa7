"""Integer hyper-synthesis: ``h_s`` whose CDF indexes and means are exact on every machine.

Ballé, Johnston & Minnen (2019), "Integer networks for data compression with latent-variable
models": the entropy model must give the decoder *exactly* the encoder's tables, and float
arithmetic cannot promise that across machines, thread counts or GPUs. Here ``h_s`` is a
chain of integer layers::

    z symbols ─▶ clip(±in_clip) ─▶ [3×3 integer conv (+ pixel shuffle ×2)] ─▶ ⌊(v + ⌊D/2⌋) / D⌋
              ─▶ clip 0…255 (ReLU) or leaky (÷ 1/slope) ─▶ … ─▶ last layer:
                   σ·2^8  ─▶ lookup table ─▶ CDF index  (scale channels)
                   μ·2^8  ─▶ μ = integer / 256          (mean channels, mean-scale models)

Each layer is an integer kernel ``H`` (per-output-channel scale folded in), an integer bias
``B`` and a per-output-channel integer divisor ``D``. A stride-2 5×5 transposed convolution
(CompressAI's ``deconv``) is written exactly as a 3×3 convolution to 4× the channels (one
group per output phase) followed by a pixel shuffle, so every layer is one GEMM over
``unfold``-ed columns.

Exact by construction: every input, kernel entry and bias is an integer, and the layer's
bound ``max_c Σ|H_c|·max|input| + |B_c|`` is checked when the codec loads. Below 2^24 every
partial sum of the GEMM is an integer float32 represents exactly, so any summation order,
thread count, batch size, BLAS or GPU gives the same result; the GEMM is an explicit
``unfold`` + ``matmul`` (never a Winograd or FFT convolution) at full float32 precision (no
TF32, no reduced-precision reductions). A layer over 2^24 runs its GEMM in float64 (exact
below 2^53; the limit is 2^52, leaving room for the rounding offset); a layer over that is
refused. Rounding divisions, clips and the table lookup
are exact integer operations (float64 on integers below 2^53).

ẑ's medians are folded into the first layer as the kernel of an extra all-ones input channel
(Σ over z channels of kernel · median, per tap): zero padding then drops exactly the taps
that fall outside the grid, as it does for ẑ itself, so the network's input is the integer
z symbols and the fold is exact at the borders too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import CodecError

#: The entropy-parameter procedure these layers implement (goes into the codec fingerprint).
ENTROPY_PARAMS = "h_s/integer-gemm/fixed8-lut-v1"
FORMAT_VERSION = 1
EXACT_FP32 = 2**24  # every integer of magnitude below this is a float32
EXACT_FP64 = 2**52  # float64 holds every integer below 2^53; the rounding offset ⌊D/2⌋ needs a bit
ACT_MAX = 255  # hidden activations: 8 bits (and a sign for leaky layers)
FIXED_BITS = 8  # σ and μ leave the last layer as integer / 2^8
SCALE_MAX = 256 << FIXED_BITS  # σ·2^8 is clipped to 0…SCALE_MAX before the table lookup
MEAN_MAX = 2**23  # |μ·2^8| is clipped to this
ACTS = {"relu": 0, "leaky": 1, "none": 2}


@dataclass(frozen=True)
class FloatLayer:
    """One ``h_s`` layer in the shape the integer network uses: a 3×3, stride-1, padding-1
    convolution to ``C·upsample²`` channels, a pixel shuffle, then the activation."""

    kernel: torch.Tensor  # float [C·r², C_in, 3, 3]
    bias: torch.Tensor  # float [C·r²]
    upsample: int  # r: 1 or 2
    act: str  # relu | leaky | none
    leak: int = 0  # 1 / negative slope, for leaky
    ones_input: bool = False  # an all-ones input channel follows the real ones (folded medians)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ones_input:
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        v = F.conv2d(x, self.kernel.to(x.dtype), self.bias.to(x.dtype), padding=1)
        if self.upsample > 1:
            v = F.pixel_shuffle(v, self.upsample)
        if self.act == "relu":
            return F.relu(v)
        if self.act == "leaky":
            return F.leaky_relu(v, 1.0 / self.leak)
        return v


def _phases(w: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) weight ``[C_in, C, 5, 5]`` as
    the kernel ``[4C, C_in, 3, 3]`` of a 3×3 convolution whose channel ``4c + 2·py + px`` is
    output phase (py, px) of channel c: out[2m+p] = Σ_t in[m-1+t] · w[2(2-t)+p] (t = 0, 1, 2)."""
    c_in, c_out = w.shape[:2]
    k = w.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for py in range(2):
        for ty in range(3):
            ky = 2 * (2 - ty) + py
            if ky > 4:
                continue
            for px in range(2):
                for tx in range(3):
                    kx = 2 * (2 - tx) + px
                    if kx <= 4:
                        k[:, py, px, :, ty, tx] = w[:, :, ky, kx].T
    return k.reshape(4 * c_out, c_in, 3, 3)


def float_layers(h_s: nn.Module) -> list[FloatLayer]:
    """CompressAI's ``h_s`` (deconv 5×5/2 and conv 3×3/1 layers, ReLU or LeakyReLU between) as
    ``FloatLayer``s computing the same function. Anything else cannot be made integer."""
    mods = list(h_s.children()) if isinstance(h_s, nn.Sequential) else [h_s]
    layers: list[FloatLayer] = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.ConvTranspose2d):
            if (m.kernel_size, m.stride, m.padding, m.output_padding, m.groups, m.dilation) != (
                    (5, 5), (2, 2), (2, 2), (1, 1), 1, (1, 1)):
                raise CodecError(f"h_s layer {i}: only 5x5 stride-2 transposed convolutions "
                                 "(CompressAI's deconv) can be made integer")
            bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_channels)
            layers.append(FloatLayer(_phases(m.weight.detach()), bias.detach().repeat_interleave(4), 2,
                                     "none"))
        elif isinstance(m, nn.Conv2d):
            if (m.kernel_size, m.stride, m.padding, m.groups, m.dilation) != ((3, 3), (1, 1), (1, 1), 1,
                                                                             (1, 1)):
                raise CodecError(f"h_s layer {i}: only 3x3 stride-1 convolutions can be made integer")
            bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_channels)
            layers.append(FloatLayer(m.weight.detach().clone(), bias.detach().clone(), 1, "none"))
        elif isinstance(m, nn.ReLU | nn.LeakyReLU):
            if not layers or layers[-1].act != "none":
                raise CodecError(f"h_s layer {i}: an activation must follow a convolution")
            prev = layers[-1]
            if isinstance(m, nn.ReLU):
                layers[-1] = FloatLayer(prev.kernel, prev.bias, prev.upsample, "relu")
            else:
                leak = round(1 / m.negative_slope)
                if leak < 2 or abs(1 / leak - m.negative_slope) > 1e-12:
                    raise CodecError(f"h_s layer {i}: LeakyReLU slope {m.negative_slope} is not 1/n")
                layers[-1] = FloatLayer(prev.kernel, prev.bias, prev.upsample, "leaky", leak)
        else:
            raise CodecError(f"h_s layer {i} ({type(m).__name__}) cannot be made integer")
    if not layers or layers[-1].act == "leaky":
        raise CodecError("h_s must end in a convolution (optionally a ReLU)")
    return layers


@dataclass(frozen=True)
class IntLayer:
    kernel: torch.Tensor  # int64 [C·r², C_in, 3, 3]
    bias: torch.Tensor  # int64 [C·r²]
    divisor: torch.Tensor  # int64 [C·r²], >= 1
    upsample: int
    act: str
    leak: int  # leaky layers: negative part divided by leak·D
    lo: int  # output clip
    hi: int

    def bound(self, in_max: int) -> int:
        """Largest |partial sum| of this layer's GEMM plus bias, over every output channel."""
        per_channel = self.kernel.abs().flatten(1).sum(1) * in_max + self.bias.abs()
        return int(per_channel.max())


@contextlib.contextmanager
def ieee_matmul():
    """Float32 matrix products at full IEEE precision on every backend for the block: no TF32,
    no bf16 passes (oneDNN's fp32 math mode), restoring the caller's settings after."""
    saved = [(m, m.fp32_precision) for m in (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)]
    try:
        for m, _ in saved:
            m.fp32_precision = "ieee"
        yield
    finally:
        for m, p in saved:
            m.fp32_precision = p


def _round_div(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """⌊(v + ⌊d/2⌋) / d⌋ for integer-valued float64 ``v`` (|v| < 2^52) and integer ``d`` >= 1:
    exact, since a quotient of such integers is never rounded across an integer."""
    return torch.floor((v + torch.floor(d / 2)) / d)


class IntegerHyperSynthesis:
    """The integer ``h_s`` of a hyperprior codec: z symbols → y's CDF indexes (and means)."""

    id = ENTROPY_PARAMS

    def __init__(self, layers: list[IntLayer], in_clip: int, scale_channels: int, mean_channels: int,
                 scale_table: np.ndarray, scale_bound: float, ones_input: bool = False):
        if not layers:
            raise CodecError("integer h_s has no layers")
        self.layers = layers
        self.in_clip = int(in_clip)
        self.ones_input = bool(ones_input)
        self.z_channels = layers[0].kernel.shape[1] - int(self.ones_input)
        self.scale_channels = scale_channels
        self.mean_channels = mean_channels
        self.bounds: list[int] = []
        self.gemm_dtypes: list[torch.dtype] = []
        in_max = self.in_clip
        for i, layer in enumerate(layers):
            b = layer.bound(in_max)
            self.bounds.append(b)
            if b >= EXACT_FP64:
                raise CodecError(
                    f"integer h_s layer {i}: its partial sums reach {b} (Σ|kernel|·{in_max} + |bias|), "
                    "beyond what float64 computes exactly (2^52); this checkpoint cannot decode exactly")
            self.gemm_dtypes.append(torch.float32 if b < EXACT_FP32 else torch.float64)
            in_max = max(abs(layer.lo), abs(layer.hi))
        # CompressAI's index: #{table[:-1] < max(σ, bound)}; σ = q / 2^8 and the table values
        # are compared exactly (float64 holds both), so the table is the same on every machine.
        q = np.arange(SCALE_MAX + 1, dtype=np.float64) / (1 << FIXED_BITS)
        sigma = np.maximum(q, np.float64(np.float32(scale_bound)))
        table = np.asarray(scale_table, dtype=np.float32).astype(np.float64)[:-1]
        idx = np.searchsorted(table, sigma, side="left")
        self.lut = idx.astype(np.uint8 if idx.max() < 256 else np.int32)  # small: stays in cache
        self._mats = [(lay.kernel.flatten(1).to(dt), lay.bias.to(dt)[:, None],
                       lay.divisor.double()[:, None])
                      for lay, dt in zip(layers, self.gemm_dtypes, strict=True)]

    def to(self, device: str | torch.device) -> IntegerHyperSynthesis:
        """Run the GEMMs on ``device`` (same integers anywhere: the bound makes them exact)."""
        self._mats = [tuple(t.to(device) for t in m) for m in self._mats]
        return self

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {"version": torch.tensor(FORMAT_VERSION),
              "config": torch.tensor([self.in_clip, self.scale_channels, self.mean_channels,
                                      len(self.layers), int(self.ones_input)])}
        for i, lay in enumerate(self.layers):
            small = int(lay.kernel.abs().max()) < 2**31
            sd[f"layers.{i}.kernel"] = lay.kernel.to(torch.int32 if small else torch.int64)
            sd[f"layers.{i}.bias"] = lay.bias.to(torch.int64)
            sd[f"layers.{i}.divisor"] = lay.divisor.to(torch.int64)
            sd[f"layers.{i}.meta"] = torch.tensor([lay.upsample, ACTS[lay.act], lay.leak, lay.lo, lay.hi])
        return sd

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], scale_table, scale_bound: float,
                        where: str = "checkpoint") -> IntegerHyperSynthesis:
        """Rebuild and validate; any inconsistency is a ``CodecError`` naming ``where``."""
        def need(key: str) -> torch.Tensor:
            t = sd.get(key)
            if not isinstance(t, torch.Tensor):
                raise CodecError(f"{where}: integer h_s lacks {key!r}; the checkpoint is damaged")
            return t

        if int(need("version").reshape(-1)[0]) != FORMAT_VERSION:
            raise CodecError(f"{where}: integer h_s format {int(sd['version'])} is not supported "
                             f"(this latent-shards reads {FORMAT_VERSION}); upgrade latent-shards")
        cfg = need("config").reshape(-1).tolist()
        if len(cfg) != 5:
            raise CodecError(f"{where}: integer h_s config has {len(cfg)} fields, expected 5")
        in_clip, sc, mc, n, ones = (int(v) for v in cfg)
        if not (0 < n <= 16 and 0 < in_clip < 2**20 and sc > 0 and mc >= 0 and ones in (0, 1)):
            raise CodecError(f"{where}: integer h_s config {cfg} is out of range")
        inv = {v: k for k, v in ACTS.items()}
        layers, c_in = [], None
        for i in range(n):
            k, b, d, meta = (need(f"layers.{i}.{p}") for p in ("kernel", "bias", "divisor", "meta"))
            if k.is_floating_point() or b.is_floating_point() or d.is_floating_point():
                raise CodecError(f"{where}: integer h_s layer {i} holds non-integer tensors")
            meta = meta.reshape(-1).tolist()
            if len(meta) != 5 or meta[0] not in (1, 2) or meta[1] not in inv:
                raise CodecError(f"{where}: integer h_s layer {i} has a bad description {meta}")
            up, act, leak, lo, hi = meta
            if k.dim() != 4 or k.shape[2:] != (3, 3) or k.shape[0] % (up * up) or b.shape != k.shape[:1] \
                    or d.shape != k.shape[:1] or (c_in is not None and k.shape[1] != c_in):
                raise CodecError(f"{where}: integer h_s layer {i} has inconsistent shapes "
                                 f"(kernel {tuple(k.shape)}, bias {tuple(b.shape)}, "
                                 f"divisor {tuple(d.shape)})")
            if int(d.min()) < 1 or lo > hi or (inv[act] == "leaky" and leak < 1):
                raise CodecError(f"{where}: integer h_s layer {i} has a divisor below 1 or a bad clip")
            layers.append(IntLayer(k.long(), b.long(), d.long(), up, inv[act], leak, lo, hi))
            c_in = k.shape[0] // (up * up)
        if c_in != sc + mc:
            raise CodecError(f"{where}: integer h_s ends in {c_in} channels, expected {sc} + {mc}")
        return cls(layers, in_clip, sc, mc, scale_table, scale_bound, bool(ones))

    # -- evaluation -------------------------------------------------------------------------------
    def run(self, z_sym: torch.Tensor | np.ndarray, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The last layer's integers (float64 tensor ``[B, C, H, W]``) for z symbols ``[B, N, h, w]``.

        ``gemm_dtype`` forces float32 or float64 GEMMs where float32 is exact (tests: both give
        the same integers); a layer over the float32 bound always runs in float64."""
        x = torch.as_tensor(z_sym).to(torch.float32).clamp_(-self.in_clip, self.in_clip)
        if self.ones_input:  # the folded medians' channel
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        with ieee_matmul():
            for lay, (kmat, bias, div), dt in zip(self.layers, self._mats, self.gemm_dtypes, strict=True):
                dt = gemm_dtype if gemm_dtype is not None and dt == torch.float32 else dt
                b, _, h, w = x.shape
                cols = F.unfold(x.to(dt), 3, padding=1)  # [B, C_in·9, h·w]: copies, no arithmetic
                if b == 1:
                    v = torch.addmm(bias.to(dt), kmat.to(dt), cols[0])[None]
                else:
                    v = torch.matmul(kmat.to(dt), cols).add_(bias.to(dt))
                v = v.double()
                q = _round_div(v, div)
                if lay.act == "leaky":
                    q = torch.where(v >= 0, q, _round_div(v, div * lay.leak))
                q = q.clamp_(lay.lo, lay.hi).view(b, -1, h, w)
                x = F.pixel_shuffle(q, lay.upsample) if lay.upsample > 1 else q
        return x

    def __call__(self, z_sym, gemm_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(CDF indexes int32 ``[B, M, H, W]``, means float64 or None): means are integers / 2^8,
        so ``symbols + μ`` is exact in float32 for every symbol below 2^15 in magnitude."""
        out = self.run(z_sym, gemm_dtype).cpu()
        scales = out[:, : self.scale_channels].clamp(0, SCALE_MAX).numpy().astype(np.int64)
        idx = np.take(self.lut, scales).astype(np.int32)
        if not self.mean_channels:
            return idx, None
        means = out[:, self.scale_channels:] / (1 << FIXED_BITS)
        return idx, means.numpy()
