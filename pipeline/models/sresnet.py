"""sResNet (Codevilla et al., Table 6 / Sec. 2.4) and cResNet (Torfason et al.) on ŷ.

sResNet stem, our reading of Table 6 ("Block(256, 64) · PS(2) · Block(64, 16) · PS(2) ·
Block(16, 16) · 1×1, 64"): ``Block(c, c/4)`` is a residual block working at ``c`` channels
whose output the following PixelShuffle(2) turns into ``c/4`` channels at twice the size::

    ŷ [M, H/16, W/16] ─ Block(M→256) ─ PS(2) ─▶ [64, H/8] ─ Block(64) ─ PS(2) ─▶ [16, H/4]
                      ─ Block(16) ─ 1×1 conv ─▶ [64, H/4, W/4] ─▶ ResNet layer1..layer4 ─▶ head

With one pixel-shuffle block (the seed's ablation) the stem ends at H/8. cResNet feeds ŷ,
after a 1×1 adapter, to the ResNet stage whose input has ŷ's resolution (H/16: layer4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tvm

from pipeline.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "mish": nn.Mish}


@dataclass(frozen=True)
class StemConfig:
    shuffles: int = 2  # pixel-shuffle blocks: 2 → H/4 (as the paper), 1 → H/8
    residual: bool = True
    activation: str = "relu"


class Block(nn.Module):
    """3×3 conv–BN–act–3×3 conv–BN, plus a (1×1-projected) skip when ``residual``."""

    def __init__(self, c_in: int, c_out: int, residual: bool, act: type[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = None
        if residual:
            self.skip = nn.Identity() if c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + self.skip(x) if self.skip is not None else y)


class PixelShuffleStem(nn.Module):
    """ŷ [M, H/16, W/16] → [64, H/4, W/4] (two shuffles) or [64, H/8, W/8] (one)."""

    def __init__(self, in_channels: int, cfg: StemConfig = StemConfig(), out_channels: int = 64):
        super().__init__()
        if cfg.shuffles not in (1, 2):
            raise ConfigError(f"shuffles must be 1 or 2, got {cfg.shuffles}")
        if cfg.activation not in ACTIVATIONS:
            raise ConfigError(f"activation {cfg.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[cfg.activation]
        widths = [256, 64, 16][: cfg.shuffles + 1]
        layers: list[nn.Module] = [Block(in_channels, widths[0], cfg.residual, act)]
        for w in widths[1:]:
            layers += [nn.PixelShuffle(2), Block(w, w, cfg.residual, act)]
        layers += [nn.Conv2d(widths[-1], out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), act()]
        self.layers = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.layers(y)


class LatentResNet(nn.Module):
    """A torchvision ResNet whose stem (or first stages) is replaced to take ŷ."""

    def __init__(self, resnet: tvm.ResNet, entry: nn.Module, stages: list[str]):
        super().__init__()
        self.entry = entry
        self.stages = nn.Sequential(*[getattr(resnet, s) for s in stages])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = resnet.fc

    def forward_features(self, y: torch.Tensor) -> torch.Tensor:
        return self.stages(self.entry(y))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(f), 1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(y))


def _tv_resnet(depth: int, num_classes: int) -> tvm.ResNet:
    return getattr(tvm, f"resnet{depth}")(weights=None, num_classes=num_classes)


def sresnet(depth: int, in_channels: int, num_classes: int, stem: StemConfig = StemConfig()) -> LatentResNet:
    r = _tv_resnet(depth, num_classes)
    return LatentResNet(r, PixelShuffleStem(in_channels, stem), ["layer1", "layer2", "layer3", "layer4"])


def cresnet(depth: int, in_channels: int, num_classes: int) -> LatentResNet:
    r = _tv_resnet(depth, num_classes)
    c = r.layer4[0].conv1.in_channels  # layer4's input: the H/16 feature map
    adapter = nn.Sequential(nn.Conv2d(in_channels, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
    return LatentResNet(r, adapter, ["layer4"])
