"""Build a ready `Codec` from a spec: bundled default, local checkpoint or CompressAI zoo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import compressai
import torch

from pipeline.codec import checkpoint
from pipeline.codec.checkpoint import Checkpoint
from pipeline.codec.codec import CODER, ENTROPY_PARAMS, Codec, CodecIdentity
from pipeline.codec.container import CONTAINER_VERSION
from pipeline.codec.fingerprint import codec_fingerprint
from pipeline.codec.registry import get_architecture
from pipeline.errors import CodecError

DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "default.pt"


@dataclass(frozen=True)
class CodecSpec:
    """Where a codec's weights come from; exactly one source wins, in this order."""

    checkpoint: str | None = None  # local path or fsspec URL
    arch: str | None = None  # needed for a plain CompressAI state dict and for --pretrained
    quality: int | None = None  # for --pretrained
    pretrained: bool = False

    def describe(self) -> str:
        if self.checkpoint:
            return f"checkpoint:{self.checkpoint}"
        if self.pretrained:
            return f"zoo:{self.arch}/q{self.quality}"
        return "bundled:default"


def _zoo_checkpoint(arch_name: str, quality: int | None) -> Checkpoint:
    arch = get_architecture(arch_name)
    if quality is None:
        raise CodecError("--pretrained needs --quality (1..8)")
    arch.channels(quality)
    try:
        model = arch.zoo_fn(quality, pretrained=True, progress=False)
    except Exception as exc:  # noqa: BLE001 - urllib/hub raise many kinds when offline
        raise CodecError(
            f"could not fetch the pretrained {arch_name} q{quality} weights from the CompressAI "
            f"zoo ({type(exc).__name__}: {exc}); offline, download the .pth.tar elsewhere and "
            "pass it with --checkpoint PATH --arch " + arch_name
        ) from None
    return checkpoint.from_compressai_state_dict(model.state_dict(), arch_name, quality)


def read_spec(spec: CodecSpec) -> Checkpoint:
    if spec.checkpoint:
        return checkpoint.read(spec.checkpoint, arch=spec.arch)
    if spec.pretrained:
        if not spec.arch:
            raise CodecError("--pretrained needs --arch")
        return _zoo_checkpoint(spec.arch, spec.quality)
    if not DEFAULT_CHECKPOINT.is_file():
        raise CodecError(f"the bundled default codec {DEFAULT_CHECKPOINT} is missing; "
                         "reinstall latent-shards or run `make default-codec`")
    return checkpoint.read(DEFAULT_CHECKPOINT)


def codec_from_checkpoint(ckpt: Checkpoint, source: str = "") -> Codec:
    arch = get_architecture(ckpt.arch)
    model = checkpoint.build_model(ckpt)
    fp = codec_fingerprint(ckpt.arch, ckpt.N, ckpt.M, model.state_dict(),
                           f"{CODER}+{ENTROPY_PARAMS}", CONTAINER_VERSION)
    identity = CodecIdentity(
        arch=ckpt.arch, family=arch.family, N=ckpt.N, M=ckpt.M, quality=ckpt.quality,
        lmbda=ckpt.lmbda, fingerprint=fp, coder=CODER, container_version=CONTAINER_VERSION,
        multiple=arch.multiple, downsample=arch.downsample, source=source,
        versions={"torch": torch.__version__.split("+")[0], "compressai": compressai.__version__},
    )
    return Codec(model, arch, identity)


def load_codec(spec: CodecSpec | None = None) -> Codec:
    spec = spec or CodecSpec()
    return codec_from_checkpoint(read_spec(spec), spec.describe())
