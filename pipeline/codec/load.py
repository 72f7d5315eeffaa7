"""Build a ready `Codec` from a spec: bundled default, local checkpoint or CompressAI zoo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import compressai
import torch

from pipeline.codec import checkpoint
from pipeline.codec.checkpoint import Checkpoint
from pipeline.codec.codec import CODER, Codec, CodecIdentity
from pipeline.codec.container import CONTAINER_VERSION
from pipeline.codec.entropy import FLOAT_PARAMS
from pipeline.codec.fingerprint import codec_fingerprint
from pipeline.codec.integer import ENTROPY_PARAMS as INTEGER_PARAMS
from pipeline.codec.registry import get_architecture
from pipeline.errors import CodecError

WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS / "default.pt"
#: Codecs that ship with latent-shards, by the name ``--checkpoint bundled:NAME`` takes.
BUNDLED = {"default": DEFAULT_CHECKPOINT, "lowest-rate": WEIGHTS / "lowest-rate.pt",
           "low-rate": WEIGHTS / "low-rate.pt",
           "high-rate": WEIGHTS / "high-rate.pt", "mbt2018-mean": WEIGHTS / "mbt2018-mean.pt",
           # the grey-textures pair (`make eval-codecs`): the same fine-tune of low-rate and
           # default, rate–distortion alone or with the task loss (Eq. 6)
           **{f"textures-{m}-{r}": WEIGHTS / f"textures-{m}-{r}.pt" for m in ("rd", "task")
              for r in ("low", "mid")}}
#: The bundled scale-only codecs from low to high rate: one curve (the rate ladder).
BUNDLED_CURVE = ("lowest-rate", "low-rate", "default", "high-rate")


def bundled_present(name: str) -> bool:
    return name in BUNDLED and BUNDLED[name].is_file()


def bundled_checkpoint(name: str) -> Path:
    """The file of a bundled codec (``default``: the scale-only hyperprior; ``mbt2018-mean``)."""
    if name not in BUNDLED:
        raise CodecError(f"no bundled codec {name!r}; bundled: {', '.join(BUNDLED)}")
    if not BUNDLED[name].is_file():
        raise CodecError(f"the bundled codec {BUNDLED[name]} is missing; "
                         "reinstall latent-shards or run `make default-codec`")
    return BUNDLED[name]


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
            "pass it with --checkpoint PATH --codec-arch " + arch_name
        ) from None
    return checkpoint.from_compressai_state_dict(model.state_dict(), arch_name, quality)


def read_spec(spec: CodecSpec) -> Checkpoint:
    if spec.checkpoint and spec.checkpoint.startswith("bundled:"):
        return checkpoint.read(bundled_checkpoint(spec.checkpoint.removeprefix("bundled:")), arch=spec.arch)
    if spec.checkpoint:
        return checkpoint.read(spec.checkpoint, arch=spec.arch)
    if spec.pretrained:
        if not spec.arch:
            raise CodecError("--pretrained needs --codec-arch")
        return _zoo_checkpoint(spec.arch, spec.quality)
    return checkpoint.read(bundled_checkpoint("default"))


def codec_from_checkpoint(ckpt: Checkpoint, source: str = "") -> Codec:
    arch = get_architecture(ckpt.arch)
    # the model's random initialisation is overwritten by the checkpoint: it must not draw from
    # the caller's random stream (a loader that loads its codec lazily, mid-run, would shift a
    # training run's draws, and a resumed run would not end where an uninterrupted one does)
    with torch.random.fork_rng(devices=[]):
        model = checkpoint.build_model(ckpt)
    tensors = model.state_dict()
    params = FLOAT_PARAMS
    if ckpt.integer_h_s is not None:  # the integer layers decide the bitstream too
        tensors = {**tensors, **{f"integer_h_s.{k}": v for k, v in ckpt.integer_h_s.items()}}
        params = INTEGER_PARAMS
    fp = codec_fingerprint(ckpt.arch, ckpt.N, ckpt.M, tensors, f"{CODER}+{params}", CONTAINER_VERSION)
    identity = CodecIdentity(
        arch=ckpt.arch, family=arch.family, N=ckpt.N, M=ckpt.M, quality=ckpt.quality,
        lmbda=ckpt.lmbda, fingerprint=fp, coder=CODER, container_version=CONTAINER_VERSION,
        multiple=arch.multiple, downsample=arch.downsample, source=source,
        versions={"torch": torch.__version__.split("+")[0], "compressai": compressai.__version__},
        entropy_params=params,
    )
    return Codec(model, arch, identity, ckpt.integer_h_s)


def load_codec(spec: CodecSpec | None = None) -> Codec:
    spec = spec or CodecSpec()
    return codec_from_checkpoint(read_spec(spec), spec.describe())
