"""One registry of models, keyed by stable names; every entry built by `create_model`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision import models as tvm

from pipeline.errors import ConfigError
from pipeline.models.detection import DeepLabV3, faster_rcnn
from pipeline.models.sresnet import StemConfig, cresnet, sresnet


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: str  # "latent" (ŷ, M channels) or "pixels" (RGB)
    build: Callable[..., nn.Module]
    task: str = "classify"  # "classify", "detect" (Faster R-CNN) or "segment" (DeepLabV3)


def _pixels(depth: int):
    return lambda in_channels, num_classes, **_: getattr(tvm, f"resnet{depth}")(
        weights=None, num_classes=num_classes)


MODELS: dict[str, ModelSpec] = {}
for _d in (18, 34, 50, 101):
    MODELS[f"sresnet{_d}"] = ModelSpec(
        f"sresnet{_d}", "latent",
        lambda in_channels, num_classes, d=_d, **kw: sresnet(d, in_channels, num_classes, StemConfig(**kw)))
    MODELS[f"cresnet{_d}"] = ModelSpec(
        f"cresnet{_d}", "latent",
        lambda in_channels, num_classes, d=_d, **_: cresnet(d, in_channels, num_classes))
    MODELS[f"resnet{_d}"] = ModelSpec(f"resnet{_d}", "pixels", _pixels(_d))
    for _p, _kind in (("s", "latent"), ("", "pixels")):
        MODELS[f"fasterrcnn-{_p}resnet{_d}"] = ModelSpec(
            f"fasterrcnn-{_p}resnet{_d}", _kind, lambda in_channels, num_classes, d=_d, k=_kind, **kw:
            faster_rcnn(d, num_classes, in_channels if k == "latent" else None, **kw), "detect")
        MODELS[f"deeplabv3-{_p}resnet{_d}"] = ModelSpec(
            f"deeplabv3-{_p}resnet{_d}", _kind, lambda in_channels, num_classes, d=_d, k=_kind, **_:
            DeepLabV3(d, num_classes, in_channels if k == "latent" else None), "segment")


def create_model(name: str, in_channels: int, num_classes: int, **stem) -> nn.Module:
    """``stem`` (sResNet only): shuffles=1|2, residual=bool, activation=relu|silu|mish; for
    Faster R-CNN: window_px, anchor_sizes, fpn_channels,
    roi_batch, fpn_from. ``num_classes`` excludes background."""
    try:
        spec = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return spec.build(in_channels=in_channels, num_classes=num_classes, **stem)
