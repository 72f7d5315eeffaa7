"""Codec checkpoints: the project's own format (with metadata) and CompressAI state dicts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import torch

from pipeline.codec.registry import Architecture, get_architecture
from pipeline.errors import CodecError
from pipeline.storage import with_retries

FORMAT = "latent-shards-codec"
FORMAT_VERSION = 2  # 2: optional integer h_s (pipeline.codec.integer)
READABLE_VERSIONS = (1, 2)
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


@dataclass(frozen=True)
class Checkpoint:
    """A codec's weights with what is known about them."""

    arch: str
    N: int
    M: int
    state_dict: dict[str, torch.Tensor]
    quality: int | None = None
    lmbda: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: integer hyper-synthesis (``IntegerHyperSynthesis.state_dict()``); None: the float64 h_s
    integer_h_s: dict[str, torch.Tensor] | None = None


def build_model(ckpt: Checkpoint) -> torch.nn.Module:
    """The model in eval mode, float32, with CDF tables from the checkpoint (never recomputed)."""
    arch = get_architecture(ckpt.arch)
    model = arch.build(ckpt.N, ckpt.M)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt.state_dict.items()}
    if not has_cdf_tables(sd):
        raise CodecError(
            "checkpoint has no entropy-coder CDF tables; import it with "
            "`pipeline.codec.checkpoint.from_compressai_state_dict` (runs update(force=True) once)"
        )
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise CodecError(f"weights do not fit {ckpt.arch} N={ckpt.N} M={ckpt.M}: {exc}") from None
    return model.eval()


def has_cdf_tables(sd: dict[str, torch.Tensor]) -> bool:
    keys = [k for k in sd if k.rsplit(".", 1)[-1] in CDF_BUFFERS]
    return bool(keys) and all(sd[k].numel() > 0 for k in keys)


def finalize(model: torch.nn.Module, arch: str, quality=None, lmbda=None, metadata=None,
             half: bool = False) -> Checkpoint:
    """Freeze a trained or imported model into a Checkpoint: CDF tables computed here, once.

    With ``half`` the learned parameters are rounded to float16 *before* the tables are built
    and stored that way; buffers (scale table, bounds, GDN pedestal) stay float32, so the
    model that built the tables is exactly the model that is loaded back.
    """
    arch_spec: Architecture = get_architecture(arch)
    model = model.float().eval()
    if half:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    N, M = arch_spec.infer_channels(sd)
    if half:
        params = {n for n, _ in model.named_parameters()}
        sd = {k: (v.half() if k in params and v.is_floating_point() else v) for k, v in sd.items()}
    return Checkpoint(arch, N, M, sd, quality, lmbda, dict(metadata or {}))


def from_compressai_state_dict(sd: dict[str, torch.Tensor], arch: str, quality=None) -> Checkpoint:
    """Import a CompressAI state dict (zoo file or `model.state_dict()`); tables built if absent."""
    arch_spec = get_architecture(arch)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    N, M = arch_spec.infer_channels(sd)
    model = arch_spec.build(N, M)
    if has_cdf_tables(sd):
        model.load_state_dict(sd)
        return Checkpoint(arch, N, M, {k: v.clone() for k, v in model.state_dict().items()},
                          quality, None, {"imported_from": "compressai"})
    plain = {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in CDF_BUFFERS}
    missing, unexpected = torch.nn.Module.load_state_dict(model, plain, strict=False)
    bad = [k for k in missing if k.rsplit(".", 1)[-1] not in CDF_BUFFERS]
    if bad or unexpected:
        raise CodecError(f"weights do not fit {arch}: missing {bad[:5]}, unexpected {unexpected[:5]}")
    return finalize(model, arch, quality, metadata={"imported_from": "compressai"})


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The project's checkpoint format, as bytes (deterministic for a given checkpoint)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": ckpt.arch,
        "N": ckpt.N,
        "M": ckpt.M,
        "quality": ckpt.quality,
        "lmbda": ckpt.lmbda,
        "metadata": ckpt.metadata,
        "state_dict": ckpt.state_dict,
    }
    if ckpt.integer_h_s is not None:
        payload["integer_h_s"] = ckpt.integer_h_s
    else:  # a float-h_s checkpoint stays byte-for-byte what version 1 wrote
        payload["format_version"] = 1
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save(ckpt: Checkpoint, url: str) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(to_bytes(ckpt))


def read(url: str | Path, arch: str | None = None) -> Checkpoint:
    """Read the project's format, or a CompressAI state dict (then ``arch`` is required)."""
    def once() -> bytes:
        with fsspec.open(str(url), "rb") as f:
            return f.read()

    try:
        data = with_retries(once, f"reading {url}")
    except FileNotFoundError:
        raise CodecError(f"codec checkpoint {url} does not exist") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CodecError(f"{url} is not a readable torch checkpoint: {exc}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("format_version") not in READABLE_VERSIONS:
            raise CodecError(
                f"{url}: codec checkpoint format version {obj.get('format_version')} is not "
                f"supported (this latent-shards reads versions {READABLE_VERSIONS}); upgrade it"
            )
        if arch is not None and arch != obj["arch"]:
            raise CodecError(f"{url} holds a {obj['arch']} codec, not {arch}")
        ints = obj.get("integer_h_s")
        if ints is not None and not (isinstance(ints, dict)
                                     and all(isinstance(v, torch.Tensor) for v in ints.values())):
            raise CodecError(f"{url}: its integer h_s is not a table of tensors; the file is damaged")
        return Checkpoint(obj["arch"], int(obj["N"]), int(obj["M"]), obj["state_dict"],
                          obj.get("quality"), obj.get("lmbda"), obj.get("metadata") or {}, ints)
    if arch is None:
        raise CodecError(
            f"{url} is a plain CompressAI state dict: say which architecture it is (--codec-arch)"
        )
    if not isinstance(obj, dict):
        raise CodecError(f"{url} holds a {type(obj).__name__}, not a state dict")
    return from_compressai_state_dict(obj, arch)
