"""A loaded codec: g_a → quantise → entropy-code, and the reverse, with CompressAI's rANS coder.

Data flow (symbols as in Ballé et al. 2018 / Minnen et al. 2018)::

    x ─▶ g_a ─▶ y ─┬──────────────────────────────▶ Q(y − μ) ─▶ rANS(σ-tables) ─▶ y string
                   └▶ h_a ─▶ z ─▶ Q(z − med) ─▶ rANS ─▶ z string
                                    │ ẑ (float64, CPU)
                                    └▶ h_s ─▶ (σ, μ) ─▶ CDF indexes

The entropy parameters (``h_s`` → σ, μ → CDF indexes) are always computed by one canonical
path, on the CPU in float64, when encoding and when decoding: a GPU (TF32, cuDNN algorithm
choice) would otherwise pick different CDF indexes than the CPU that decodes later, and the
stream would decode to garbage (CompressAI issues #279, #309, #54). ``g_a`` may run anywhere.
Float64 makes an index flip between two CPUs astronomically unlikely rather than impossible
(BLAS summation order differs between instruction sets), so each container also carries a
CRC of its y symbols and decoding raises instead of returning wrong symbols.

Medians and means are float64 here (float32 in CompressAI), so these streams are meant for
this decoder, not for CompressAI's own ``decompress()``.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from pipeline.codec import fast_rans
from pipeline.codec.container import LatentContainer
from pipeline.codec.registry import (
    FACTORIZED,
    MEAN_SCALE_HYPERPRIOR,
    SCALE_HYPERPRIOR,
    Architecture,
)
from pipeline.errors import CodecError, ContainerError, FingerprintMismatch

CODER = "compressai-ans"
#: How the entropy parameters are computed; part of the fingerprint, since it decides decoding.
ENTROPY_PARAMS = "h_s/float64/cpu/searchsorted-v1"
#: The coder refuses (aborts the process) on streams of fewer symbols than this.
MIN_SYMBOLS = 2


@dataclass(frozen=True)
class CodecIdentity:
    """Everything a dataset records about the codec that wrote it."""

    arch: str
    family: str
    N: int
    M: int
    quality: int | None
    lmbda: float | None
    fingerprint: str
    coder: str
    container_version: int
    multiple: int
    downsample: int
    source: str
    versions: dict = field(default_factory=dict)  # recorded beside the fingerprint, not in it

    def to_json(self) -> dict:
        return asdict(self)


class _Tables:
    """One entropy model's CDF tables: Python lists for CompressAI's coder (made once, not per
    call) and contiguous int32 arrays for the fast coder."""

    def __init__(self, em):
        self.cdf = em._quantized_cdf.tolist()
        self.cdf_length = em._cdf_length.reshape(-1).int().tolist()
        self.offset = em._offset.reshape(-1).int().tolist()
        self.fast = fast_rans.FastTables(em._quantized_cdf.int().numpy(), em._cdf_length.int().numpy(),
                                         em._offset.int().numpy())

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
                             f"({raw.size} escaped); the fast coder (a C compiler) codes them")

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
            raise ValueError("scale table must be positive and strictly increasing")
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


def _symbols_crc(sym: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(sym, dtype=np.int32).tobytes())


def _channel_indexes(shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    return np.broadcast_to(np.arange(c, dtype=np.int32)[:, None, None], (c, h, w))


class Codec:
    """A CompressAI model frozen for coding, with its identity."""

    def __init__(self, model: torch.nn.Module, arch: Architecture, identity: CodecIdentity):
        self.model = model.eval()
        self.arch = arch
        self.identity = identity
        self.device = torch.device("cpu")
        eb: EntropyBottleneck = model.entropy_bottleneck
        self._eb = _Tables(eb)
        self._medians = eb.quantiles[:, 0, 1].detach().double().cpu()
        self._fp_prefix = bytes.fromhex(identity.fingerprint[:16])
        if arch.family != FACTORIZED:
            gc: GaussianConditional = model.gaussian_conditional
            self._gc = _Tables(gc)
            self._scale_bound = float(gc.lower_bound_scale.bound.item())
            self._scale_table = gc.scale_table.detach().double().cpu()
            self._buckets = ScaleBuckets(self._scale_table[:-1].numpy())
            self._h_s = copy.deepcopy(model.h_s).double().cpu().eval()

    # -- device -----------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Codec:
        """Run g_a / h_a / g_s on ``device``; entropy parameters stay on the CPU in float64."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        for name in ("g_a", "h_a", "g_s"):
            if hasattr(self.model, name):
                getattr(self.model, name).to(self.device)
        return self

    # -- canonical entropy parameters ---------------------------------------------------------
    def _entropy_params(self, z_hat: torch.Tensor,
                        reference: bool = False) -> tuple[np.ndarray, torch.Tensor | None]:
        """CDF indexes and means for y, from ẑ (float64 CPU): the one canonical path.

        The indexes are those of ``torch.searchsorted`` over the scale table (``reference=True``
        runs it); by default the same indexes come from the faster exact ``ScaleBuckets``."""
        with torch.no_grad():
            params = self._h_s(z_hat)
        if self.arch.family == MEAN_SCALE_HYPERPRIOR:
            scales, means = params.chunk(2, 1)
        else:
            scales, means = params, None
        scales = scales.clamp_min(self._scale_bound)
        # CompressAI's build_indexes loop, as one exact bucket search over the scale table.
        if reference:
            idx = torch.searchsorted(self._scale_table[:-1].contiguous(), scales.contiguous(), right=False)
            return idx.int().numpy(), means
        return self._buckets(scales.contiguous().numpy()), means

    def _z_hat(self, z_sym: torch.Tensor) -> torch.Tensor:
        return z_sym.double() + self._medians.view(1, -1, 1, 1)

    # -- encode ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, image_hw: list[tuple[int, int]]) -> list[bytes]:
        """Encode a batch of padded images ``[B, 3, Hp, Wp]`` in [0, 1] to `.latent` containers."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise CodecError(f"expected a [B, 3, H, W] batch, got {tuple(x.shape)}")
        hp, wp = x.shape[-2:]
        if hp % self.arch.multiple or wp % self.arch.multiple:
            raise CodecError(f"image {hp}x{wp} is not padded to a multiple of {self.arch.multiple}")
        y = self.model.g_a(x.to(self.device, torch.float32))
        y64 = y.double().cpu()
        if self.arch.family == FACTORIZED:
            y_sym = torch.round(y64 - self._medians.view(1, -1, 1, 1)).int().numpy()
            idx = _channel_indexes(y_sym.shape[1:])
            strings = [(self._eb.encode(y_sym[i], idx),) for i in range(len(y_sym))]
            z_shape = None
        else:
            z = self.model.h_a(torch.abs(y) if self.arch.family == SCALE_HYPERPRIOR else y)
            z_sym = torch.round(z.double().cpu() - self._medians.view(1, -1, 1, 1))
            y_idx, means = self._entropy_params(self._z_hat(z_sym))
            y_sym = torch.round(y64 - means if means is not None else y64).int().numpy()
            z_sym = z_sym.int().numpy()
            z_idx = _channel_indexes(z_sym.shape[1:])
            z_shape = tuple(z_sym.shape[1:])
            strings = [(self._gc.encode(y_sym[i], y_idx[i]), self._eb.encode(z_sym[i], z_idx))
                       for i in range(len(y_sym))]
        return [
            LatentContainer(CODER, self._fp_prefix, tuple(hw), (hp, wp), tuple(y_sym.shape[1:]),
                            z_shape, s, _symbols_crc(y_sym[i])).pack()
            for i, (hw, s) in enumerate(zip(image_hw, strings, strict=True))
        ]

    # -- decode ---------------------------------------------------------------------------------
    def parse(self, data: bytes) -> LatentContainer:
        c = LatentContainer.unpack(data)
        if c.fingerprint_prefix != self._fp_prefix:
            raise FingerprintMismatch(c.fingerprint_prefix.hex(), self.identity.fingerprint,
                                      "latent container")
        if c.coder != CODER:
            raise ContainerError(f"container written by coder {c.coder!r}, this codec uses {CODER}")
        self._check_shapes(c)
        return c

    def _check_shapes(self, c: LatentContainer) -> None:
        """Shapes must be what this codec would write, before any of them reaches the C++ coder."""
        hp, wp = c.padded_hw
        m = self.arch.multiple
        ds = self.arch.downsample
        want_y = (self.identity.M, hp // ds, wp // ds)
        want_z = None if self.arch.family == FACTORIZED else (self.identity.N, hp // 64, wp // 64)
        problems = []
        if hp % m or wp % m or not hp or not wp:
            problems.append(f"padded size {hp}x{wp} is not a positive multiple of {m}")
        if c.image_hw[0] > hp or c.image_hw[1] > wp or 0 in c.image_hw:
            problems.append(f"image {c.image_hw} does not fit the padded size {c.padded_hw}")
        if c.y_shape != want_y:
            problems.append(f"y shape {c.y_shape}, this codec writes {want_y}")
        if c.z_shape != want_z:
            problems.append(f"z shape {c.z_shape}, this codec writes {want_z}")
        if problems:
            raise ContainerError("latent container does not fit the codec: " + "; ".join(problems))

    def decode_y(self, data: bytes | LatentContainer, crop: bool = True,
                 reference: bool = False) -> torch.Tensor:
        """ŷ as float32 ``[M, h, w]`` without running g_s; ``crop`` drops the padding's part.

        The symbols come from the fast rANS decoder (``fast_rans``) when it is available and the
        CDF indexes from ``ScaleBuckets``; ``reference=True`` uses CompressAI's decoder and
        ``torch.searchsorted`` instead. Both return the same ŷ, bit for bit.
        """
        c = data if isinstance(data, LatentContainer) else self.parse(data)
        expected = 1 if self.arch.family == FACTORIZED else 2
        if len(c.strings) != expected or (expected == 2) != (c.z_shape is not None):
            raise ContainerError(
                f"container holds {len(c.strings)} strings; {self.arch.name} writes {expected}")
        if self.arch.family == FACTORIZED:
            y_sym = self._eb.decode(c.strings[0], _channel_indexes(c.y_shape), reference)
            offset = self._medians.view(-1, 1, 1)
        else:
            z_sym = self._eb.decode(c.strings[1], _channel_indexes(c.z_shape), reference)
            y_idx, means = self._entropy_params(self._z_hat(torch.from_numpy(z_sym)[None]), reference)
            y_sym = self._gc.decode(c.strings[0], y_idx[0], reference)
            offset = means[0] if means is not None else 0.0
        if _symbols_crc(y_sym) != c.symbols_crc:
            raise ContainerError(
                "decoded y symbols do not match the encoder's checksum: the stream is damaged, "
                "or this machine's float64 entropy parameters differ from the encoder's")
        y_hat = torch.from_numpy(y_sym).double() + offset
        y_hat = y_hat.float()
        if crop:
            h, w = c.valid_hw
            y_hat = y_hat[:, :h, :w].contiguous()
        return y_hat

    @torch.no_grad()
    def reconstruct(self, data: bytes) -> torch.Tensor:
        """Pixels ``[3, H, W]`` in [0, 1] (g_s over the padded grid, then cropped)."""
        c = self.parse(data)
        y_hat = self.decode_y(c, crop=False)
        x_hat = self.model.g_s(y_hat[None].to(self.device)).clamp_(0, 1)[0].cpu()
        return x_hat[:, : c.image_hw[0], : c.image_hw[1]]
