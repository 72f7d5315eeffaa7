"""A loaded codec: g_a → quantise → entropy-code, and the reverse, with CompressAI's rANS coder.

Data flow (symbols as in Ballé et al. 2018 / Minnen et al. 2018)::

    x ─▶ g_a ─▶ y ─┬───────────────────────────────▶ Q(y − μ) ─▶ rANS(σ-tables) ─▶ y string
                   └▶ h_a ─▶ z ─▶ Q(z − med) ─▶ rANS ─▶ z string
                                    │ z symbols
                                    └▶ entropy parameters ─▶ (CDF indexes, μ)

The entropy parameters come from one canonical procedure (``pipeline.codec.entropy``), the
same when encoding and when decoding, whatever device runs ``g_a``: the integer ``h_s``
(exact on every machine by construction) for codecs that have one, else the float64 CPU
``h_s`` of datasets written before it. Each container also carries a CRC of its y symbols,
so decoding raises instead of ever returning wrong symbols.

Medians and means are float64 here (float32 in CompressAI), so these streams are meant for
this decoder, not for CompressAI's own ``decompress()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from pipeline.codec.container import MAX_PIXELS, LatentContainer
from pipeline.codec.entropy import (
    FLOAT_PARAMS,
    CdfTables,
    FloatHyperSynthesis,
    IntegerHyperSynthesis,
    channel_indexes,
    hyper_synthesis,
    symbols_crc,
)
from pipeline.codec.registry import (
    FACTORIZED,
    SCALE_HYPERPRIOR,
    Architecture,
)
from pipeline.errors import CodecError, ContainerError, FingerprintMismatch

CODER = "compressai-ans"


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
    entropy_params: str = FLOAT_PARAMS  # how y's CDF indexes and means are computed

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncodedLatent:
    """One encoded image: the container and its packed bytes (what goes into the shard)."""

    container: LatentContainer
    data: bytes


class Codec:
    """A CompressAI model frozen for coding, with its identity."""

    def __init__(self, model: torch.nn.Module, arch: Architecture, identity: CodecIdentity,
                 integer_h_s: dict[str, torch.Tensor] | None = None):
        self.model = model.eval()
        self.arch = arch
        self.identity = identity
        self.device = torch.device("cpu")
        #: the most padded pixels a container may declare (`parse`); a dataset's own codec
        #: gets the dataset's --max-pixels (`LatentDataset.load_codec`)
        self.max_pixels = MAX_PIXELS
        eb = model.entropy_bottleneck
        self.z_tables = CdfTables(eb)  # the factorized model's y tables are these too
        self.medians = eb.quantiles[:, 0, 1].detach().double().cpu()
        self._fp_prefix = bytes.fromhex(identity.fingerprint[:16])
        self.y_tables: CdfTables | None = None
        self.entropy: FloatHyperSynthesis | IntegerHyperSynthesis | None = None
        if arch.family != FACTORIZED:
            self.y_tables = CdfTables(model.gaussian_conditional)
            self.entropy = hyper_synthesis(model, arch, identity.N, identity.M, integer_h_s,
                                           identity.source or "checkpoint")
        elif integer_h_s is not None:
            raise CodecError(f"{arch.name} has no hyper-synthesis, yet the checkpoint holds an integer h_s")
        if identity.entropy_params != self.entropy_params:
            raise CodecError(f"codec identity names entropy parameters {identity.entropy_params!r}, "
                             f"the checkpoint computes {self.entropy_params!r}")

    @property
    def entropy_params(self) -> str:
        """The entropy-parameter procedure's id (part of the fingerprint)."""
        return self.entropy.id if self.entropy is not None else FLOAT_PARAMS

    # -- device -----------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Codec:
        """Run g_a / h_a / g_s on ``device``; the entropy parameters stay on the CPU."""
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

    # -- public steps ----------------------------------------------------------------------------
    def y_params(self, z_sym: np.ndarray | torch.Tensor,
                 reference: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(y's CDF indexes int32 ``[B, M, H, W]``, means float64 or None) from z symbols
        ``[B, N, h, w]``: the one canonical path. ``reference`` (float path only) finds the
        indexes with ``torch.searchsorted`` instead of ``ScaleBuckets``: the same indexes."""
        if isinstance(self.entropy, FloatHyperSynthesis):
            return self.entropy(z_sym, reference)
        return self.entropy(z_sym)

    def decode_z(self, c: LatentContainer, reference: bool = False) -> np.ndarray:
        """The z symbols ``[N, h, w]`` of a hyperprior container."""
        return self.z_tables.decode(c.strings[1], channel_indexes(c.z_shape), reference)

    # -- encode ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, image_hw: list[tuple[int, int]]) -> list[EncodedLatent]:
        """Encode a batch of padded images ``[B, 3, Hp, Wp]`` in [0, 1] to `.latent` containers."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise CodecError(f"expected a [B, 3, H, W] batch, got {tuple(x.shape)}")
        hp, wp = x.shape[-2:]
        if hp % self.arch.multiple or wp % self.arch.multiple:
            raise CodecError(f"image {hp}x{wp} is not padded to a multiple of {self.arch.multiple}")
        y = self.model.g_a(x.to(self.device, torch.float32))
        y64 = y.double().cpu()
        if self.arch.family == FACTORIZED:
            y_sym = torch.round(y64 - self.medians.view(1, -1, 1, 1)).int().numpy()
            idx = channel_indexes(y_sym.shape[1:])
            strings = [(self.z_tables.encode(y_sym[i], idx),) for i in range(len(y_sym))]
            z_shape = None
        else:
            z = self.model.h_a(torch.abs(y) if self.arch.family == SCALE_HYPERPRIOR else y)
            z_sym = torch.round(z.double().cpu() - self.medians.view(1, -1, 1, 1)).int().numpy()
            y_idx, means = self.y_params(z_sym)
            y_sym = torch.round(y64 - torch.from_numpy(means) if means is not None else y64).int().numpy()
            z_idx = channel_indexes(z_sym.shape[1:])
            z_shape = tuple(z_sym.shape[1:])
            strings = [(self.y_tables.encode(y_sym[i], y_idx[i]), self.z_tables.encode(z_sym[i], z_idx))
                       for i in range(len(y_sym))]
        out = []
        for i, (hw, s) in enumerate(zip(image_hw, strings, strict=True)):
            c = LatentContainer(CODER, self._fp_prefix, tuple(hw), (hp, wp), tuple(y_sym.shape[1:]),
                                z_shape, s, symbols_crc(y_sym[i]))
            out.append(EncodedLatent(c, c.pack()))
        return out

    # -- decode ---------------------------------------------------------------------------------
    def parse(self, data: bytes, max_pixels: int | None = None) -> LatentContainer:
        """The container of ``data``, checked against this codec before anything is allocated
        for it: fingerprint, coder, shapes, at most ``max_pixels`` (default ``self.max_pixels``)
        padded pixels, and strings long enough for the symbols they declare."""
        c = LatentContainer.unpack(data)
        if c.fingerprint_prefix != self._fp_prefix:
            raise FingerprintMismatch(c.fingerprint_prefix.hex(), self.identity.fingerprint,
                                      "latent container")
        if c.coder != CODER:
            raise ContainerError(f"container written by coder {c.coder!r}, this codec uses {CODER}")
        self._check_size(c, max_pixels or self.max_pixels)
        self._check_shapes(c)
        self._check_lengths(c)
        return c

    @staticmethod
    def _check_size(c: LatentContainer, limit: int) -> None:
        """Decoding costs memory in proportion to the declared padded size: bound it first."""
        hp, wp = c.padded_hw
        if hp * wp > limit:
            raise ContainerError(
                f"latent container declares a {hp}x{wp} padded image ({hp * wp / 1e6:.1f} MP), above "
                f"the {limit / 1e6:.1f} MP limit (the dataset's --max-pixels; {MAX_PIXELS / 1e6:.0f} MP "
                "for a container read on its own); refused before decoding")

    def _check_shapes(self, c: LatentContainer) -> None:
        """Shapes must be what this codec would write, before any of them reaches the C++ coder."""
        hp, wp = c.padded_hw
        m = self.arch.multiple
        ds = self.arch.downsample
        want_y = (self.identity.M, hp // ds, wp // ds)
        want_z = None if self.arch.family == FACTORIZED else (self.arch.z_channels(self.identity.N), hp // 64,
                                                              wp // 64)
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

    def _check_lengths(self, c: LatentContainer) -> None:
        """Strings far too short for their grids are forged (or cut): refuse them before the
        entropy parameters of the whole grid are computed."""
        tables = [(c.y_shape, self.z_tables if self.arch.family == FACTORIZED else self.y_tables)]
        if c.z_shape is not None:
            tables.append((c.z_shape, self.z_tables))
        for name, string, (shape, t) in zip(("y", "z"), c.strings, tables, strict=False):  # count: decode_y
            need = t.min_bytes(int(np.prod(shape)))
            if len(string) < need:
                raise ContainerError(
                    f"latent container holds {len(string)} bytes of {name} for a {shape[0]}x{shape[1]}"
                    f"x{shape[2]} grid; the coder writes at least {need}: the stream is cut or forged")

    def decode_y(self, data: bytes | LatentContainer, crop: bool = True,
                 reference: bool = False, max_pixels: int | None = None) -> torch.Tensor:
        """ŷ as float32 ``[M, h, w]`` without running g_s; ``crop`` drops the padding's part.

        The symbols come from the fast rANS decoder (``fast_rans``) when it is available;
        ``reference=True`` uses CompressAI's decoder (and, on the float path, ``torch.searchsorted``
        instead of ``ScaleBuckets``). Both return the same ŷ, bit for bit. ``max_pixels``: as
        in `parse`.
        """
        c = data if isinstance(data, LatentContainer) else self.parse(data, max_pixels)
        expected = 1 if self.arch.family == FACTORIZED else 2
        if len(c.strings) != expected or (expected == 2) != (c.z_shape is not None):
            raise ContainerError(
                f"container holds {len(c.strings)} strings; {self.arch.name} writes {expected}")
        if self.arch.family == FACTORIZED:
            y_sym = self.z_tables.decode(c.strings[0], channel_indexes(c.y_shape), reference)
            offset = self.medians.view(-1, 1, 1)
        else:
            y_idx, means = self.y_params(self.decode_z(c, reference)[None], reference)
            y_sym = self.y_tables.decode(c.strings[0], y_idx[0], reference)
            offset = torch.from_numpy(means[0]) if means is not None else None
        if symbols_crc(y_sym) != c.symbols_crc:
            raise ContainerError(
                "decoded y symbols do not match the encoder's checksum: the stream is damaged"
                + ("" if isinstance(self.entropy, IntegerHyperSynthesis) else
                   ", or this machine's float64 entropy parameters differ from the encoder's"))
        y_hat = torch.from_numpy(y_sym)
        y_hat = (y_hat.double() + offset).float() if offset is not None else y_hat.float()
        if crop:
            h, w = c.valid_hw
            y_hat = y_hat[:, :h, :w].contiguous()
        return y_hat

    @torch.no_grad()
    def reconstruct(self, data: bytes, max_pixels: int | None = None) -> torch.Tensor:
        """Pixels ``[3, H, W]`` in [0, 1] (g_s over the padded grid, then cropped)."""
        c = self.parse(data, max_pixels)
        y_hat = self.decode_y(c, crop=False)
        x_hat = self.model.g_s(y_hat[None].to(self.device)).clamp_(0, 1)[0].cpu()
        return x_hat[:, : c.image_hw[0], : c.image_hw[1]]
