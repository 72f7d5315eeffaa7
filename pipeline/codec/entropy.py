"""The entropy layer: CDF tables, the coder calls, and the canonical entropy parameters of y.

``models`` (g_a, h_a, g_s) may run anywhere; everything here decides the bitstream and is
therefore computed by one canonical procedure, on the CPU, the same when encoding and when
decoding:

- ``CdfTables``: one entropy model's quantised CDFs, coded by the fast C coder or CompressAI's.
- ``FloatHyperSynthesis`` (id ``h_s/float64/cpu/searchsorted-v1``): ``h_s`` in float64, then an
  exact bucket search of σ over the scale table. A float64 summation order can still move an
  index between machines (astronomically rarely); the container's symbol CRC turns that into
  an error. Datasets written before the integer path decode with it, bit for bit.
- ``IntegerHyperSynthesis`` (``pipeline.codec.integer``): integer layers whose indexes and
  means are exact on every machine by construction.

Both map z symbols to (CDF indexes, means or None) with means in float64; ŷ = symbols + μ.
"""

from __future__ import annotations

import copy
import zlib

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder

from pipeline.codec import fast_rans
from pipeline.codec.integer import IntegerHyperSynthesis
from pipeline.codec.registry import MEAN_SCALE_HYPERPRIOR, Architecture
from pipeline.errors import CodecError, ContainerError

__all__ = ["CdfTables", "ScaleBuckets", "FloatHyperSynthesis", "IntegerHyperSynthesis", "FLOAT_PARAMS",
           "channel_indexes", "symbols_crc", "hyper_synthesis"]

#: The coder refuses (aborts the process) on streams of fewer symbols than this.
MIN_SYMBOLS = 2
FLOAT_PARAMS = "h_s/float64/cpu/searchsorted-v1"


class CdfTables:
    """One entropy model's CDF tables: Python lists for CompressAI's coder (made once, not per
    call) and contiguous int32 arrays for the fast coder."""

    def __init__(self, em):
        self.cdf = em._quantized_cdf.tolist()
        self.cdf_length = em._cdf_length.reshape(-1).int().tolist()
        self.offset = em._offset.reshape(-1).int().tolist()
        self.fast = fast_rans.FastTables(em._quantized_cdf.int().numpy(), em._cdf_length.int().numpy(),
                                         em._offset.int().numpy())
        cdf, lengths = em._quantized_cdf.long().numpy(), em._cdf_length.reshape(-1).long().numpy()
        freqs = np.where(np.arange(1, cdf.shape[1])[None] < lengths[:, None], np.diff(cdf, axis=1), 0)
        #: the fewest bits any symbol costs in these tables (its most probable value, in the
        #: table that gives it the highest frequency)
        self.min_bits = float(-np.log2(freqs.max() / 2 ** em.entropy_coder_precision))

    def min_bytes(self, n: int) -> int:
        """A floor on the length of a string of ``n`` symbols, for refusing forged containers
        whose strings are far too short for their declared grid. Every symbol costs at least
        ``min_bits``; the floor keeps a quarter of that, so the coder's rounding (up to about
        2^-15 of a bit per symbol) can never make a real stream fall below it."""
        return int(n * self.min_bits / 32)

    def encode(self, symbols: np.ndarray, indexes: np.ndarray, reference: bool = False) -> bytes:
        """The coder's string; the fast encoder unless ``reference`` (CompressAI's, same bytes)."""
        if symbols.size < MIN_SYMBOLS:
            raise CodecError(f"refusing to entropy-code {symbols.size} symbol(s): the coder "
                             f"needs at least {MIN_SYMBOLS}; the image is too small")
        if not reference and fast_rans.available():
            return self.fast.encode(symbols, indexes)
        self._check_reference_encodable(symbols, indexes)
        return RansEncoder().encode_with_indexes(
            symbols.reshape(-1).tolist(), indexes.reshape(-1).tolist(),
            self.cdf, self.cdf_length, self.offset)

    def _check_reference_encodable(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """Refuse what CompressAI's encoder gets wrong instead of corrupting memory: escapes of
        2^28 and more (an undefined shift) and streams that could outgrow its buffer of one
        32-bit word per symbol (each word holds >= 32 bits: 16 at most per symbol, 36 per escape)."""
        raw = self.fast.escapes(symbols, indexes)
        if raw.size and raw.max() >= 2**28:
            raise CodecError(f"entropy coding failed: {fast_rans.ERRORS[-6]}")
        n = symbols.size
        if 3 + -(-(16 * n + 36 * raw.size) // 32) > n:
            raise CodecError(f"CompressAI's encoder could overrun its buffer on these {n} symbols "
                             f"({raw.size} escaped); the fast coder (reinstall with a C compiler) codes them")

    def decode(self, string: bytes, indexes: np.ndarray, reference: bool = False) -> np.ndarray:
        """Symbols of ``string``; the fast decoder unless ``reference`` (CompressAI's, same output)."""
        if indexes.size < MIN_SYMBOLS:
            raise ContainerError(f"latent grid of {indexes.size} symbol(s) cannot be decoded")
        if not reference and fast_rans.available():
            return self.fast.decode(string, indexes)
        values = RansDecoder().decode_with_indexes(
            string, indexes.reshape(-1).tolist(), self.cdf, self.cdf_length, self.offset)
        return np.asarray(values, dtype=np.int32).reshape(indexes.shape)


class ScaleBuckets:
    """``torch.searchsorted(table, s, right=False)`` for a sorted, roughly log-spaced table, faster.

    A guess from the logarithm puts almost every value in its bucket at once; exact comparisons
    against the table then move any value that the guess misplaced. The result is therefore
    exactly searchsorted's (the unique i with table[i-1] < s <= table[i]), whatever rounding
    the logarithm does. NaN goes to the end, as with searchsorted.
    """

    def __init__(self, table: np.ndarray):
        t = np.asarray(table, dtype=np.float64)
        if t.ndim != 1 or len(t) < 2 or not (np.diff(t) > 0).all() or t[0] <= 0:
            raise CodecError("scale table must be positive and strictly increasing")
        self.n = len(t)
        self.below = np.concatenate([[-np.inf], t])  # below[g] = table[g - 1]
        self.above = np.concatenate([t, [np.inf]])  # above[g] = table[g]
        self.log0 = float(np.log(t[0]))
        self.inv_step = float((len(t) - 1) / (np.log(t[-1]) - np.log(t[0])))

    def __call__(self, s: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            guess = np.ceil((np.log(s) - self.log0) * self.inv_step)
        g = np.nan_to_num(guess, nan=self.n, posinf=self.n, neginf=0).clip(0, self.n).astype(np.int64)
        g[np.isnan(s)] = self.n
        for _ in range(self.n + 1):
            down = (self.below[g] >= s) & (g > 0)
            up = (self.above[g] < s) & (g < self.n)
            if not (down.any() or up.any()):
                return g.astype(np.int32)
            g += up.astype(np.int64) - down.astype(np.int64)
        raise AssertionError("bucket search did not converge")  # unreachable: each step moves closer


def symbols_crc(sym: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(sym, dtype=np.int32).tobytes())


def channel_indexes(shape: tuple[int, int, int]) -> np.ndarray:
    """The factorized model's CDF index of every element of a ``(C, H, W)`` grid: its channel."""
    c, h, w = shape
    return np.broadcast_to(np.arange(c, dtype=np.int32)[:, None, None], (c, h, w))


class FloatHyperSynthesis:
    """The float64 CPU ``h_s`` with an exact bucket search of σ over the scale table."""

    id = FLOAT_PARAMS

    def __init__(self, model: torch.nn.Module, arch: Architecture):
        gc = model.gaussian_conditional
        self.mean = arch.family == MEAN_SCALE_HYPERPRIOR
        self.medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().double().cpu()
        self.scale_bound = float(gc.lower_bound_scale.bound.item())
        self.scale_table = gc.scale_table.detach().double().cpu()
        self.buckets = ScaleBuckets(self.scale_table[:-1].numpy())
        self.h_s = copy.deepcopy(model.h_s).double().cpu().eval()

    def z_hat(self, z_sym) -> torch.Tensor:
        return torch.as_tensor(z_sym).double() + self.medians.view(1, -1, 1, 1)

    @torch.no_grad()
    def __call__(self, z_sym, reference: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(CDF indexes int32 ``[B, M, H, W]``, means float64 or None) for z symbols ``[B, N, h, w]``.

        ``reference`` finds the indexes with ``torch.searchsorted`` (CompressAI's procedure)
        instead of ``ScaleBuckets``: the same indexes."""
        params = self.h_s(self.z_hat(z_sym))
        scales, means = params.chunk(2, 1) if self.mean else (params, None)
        scales = scales.clamp_min(self.scale_bound)
        if reference:
            idx = torch.searchsorted(self.scale_table[:-1].contiguous(), scales.contiguous(), right=False)
            idx = idx.int().numpy()
        else:
            idx = self.buckets(scales.contiguous().numpy())
        return idx, (means.numpy() if means is not None else None)


def hyper_synthesis(model: torch.nn.Module, arch: Architecture, N: int, M: int,
                    integer_h_s: dict[str, torch.Tensor] | None, where: str = "checkpoint"):
    """The checkpoint's entropy-parameter procedure: integer when it has one, else float64."""
    if integer_h_s is None:
        return FloatHyperSynthesis(model, arch)
    gc = model.gaussian_conditional
    hs = IntegerHyperSynthesis.from_state_dict(integer_h_s, gc.scale_table.detach().cpu().numpy(),
                                               float(gc.lower_bound_scale.bound.item()), where)
    want = (arch.z_channels(N), M, M if arch.family == MEAN_SCALE_HYPERPRIOR else 0)
    got = (hs.z_channels, hs.scale_channels, hs.mean_channels)
    if got != want:
        raise CodecError(f"{where}: its integer h_s maps {got[0]} z channels to {got[1]} scales and "
                         f"{got[2]} means; {arch.name} N={N} M={M} needs {want}")
    return hs
