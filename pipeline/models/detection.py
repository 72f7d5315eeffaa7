"""Faster R-CNN and DeepLabV3 on ŷ (sResNet trunks) and on pixels (ResNet trunks, baselines).

sResNet's stem ends where a ResNet stem does (stride 4 of the image ŷ stands for, 16 px per
latent cell), so its stages give the usual stride-4/8/16/32 pyramid and torchvision's FPN,
RPN, RoI heads and ASPP take it unchanged. Three things are set for latent input instead of
torchvision's 800-px pixel defaults:

- no resize and no normalisation: ŷ goes in as stored (`LatentTransform`), and the "image"
  every box lives in is the window's pixels (16 per cell, `pipeline.loader.targets`);
- anchors are computed against that 16× image (`LatentAnchorGenerator`: torchvision infers
  strides from the input tensor, which for ŷ is 16× smaller than the image);
- anchor sizes default to 32–512 px from P2 to P6, torchvision's own (8× each level's
  stride): the 16–256 px this project first used cost ŷ half its AP50 and pixels a third
  (the ablation table in the README);
- 128 RoIs sampled per image for the box head, not torchvision's 512: the scenes hold a
  handful of objects, and the box head on 512 RoIs was 60 % of a training step's time here
  (`--roi-batch`; the ablation table in the README).

``fpn_from`` drops the finest pyramid levels: 3 feeds the FPN from stage 2 (P3–P6, strides
8–64), which for ŷ skips the stride-4 level the pixel-shuffle stem makes from 16-px cells.

The pixel baselines keep torchvision's normalisation but not its resize
(`FixedSizeTransform`), so they see the same pixels at the same scale, with the same anchors.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.ops import MultiScaleRoIAlign

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError
from pipeline.models.sresnet import PixelShuffleStem, StemConfig

ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one per FPN level (P2–P6)
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _channels(depth: int) -> list[int]:
    return [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]


def trunk(depth: int, latent_channels: int | None, dilate: bool = False) -> nn.Sequential:
    """The stem (sResNet's on ŷ when ``latent_channels``, else ResNet's) and the four stages."""
    r = tvm.__dict__[f"resnet{depth}"](weights=None, replace_stride_with_dilation=[False, dilate, dilate]
                                       if dilate else None)
    if latent_channels is not None:
        stem = PixelShuffleStem(latent_channels, StemConfig())
    else:
        stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
    return nn.Sequential(OrderedDict([("stem", stem), *((s, getattr(r, s)) for s in STAGES)]))


class LatentTransform(nn.Module):
    """GeneralizedRCNN's transform for ŷ: batch as is; each image is 16× its latent grid."""

    def forward(self, images, targets=None):
        y = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        sizes = [(CELL * y.shape[-2], CELL * y.shape[-1])] * y.shape[0]
        return ImageList(y, sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


class FixedSizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform for the pixel baselines, without its resize: the images are
    seen at the size the converter made them, as their ŷ is."""

    def resize(self, image, target=None):
        return image, target


class LatentAnchorGenerator(AnchorGenerator):
    """Anchors for ŷ input: strides taken against the 16× image, not the latent tensor."""

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        t = image_list.tensors
        virtual = t.new_zeros((1,) * t.dim()).expand(*t.shape[:-2], CELL * t.shape[-2], CELL * t.shape[-1])
        return super().forward(ImageList(virtual, image_list.image_sizes), feature_maps)


def detector_anchors(fpn_from: int = 2, anchor_sizes: tuple[int, ...] | None = None,
                     roi_batch: int = 128) -> tuple[int, ...]:
    """The anchor sizes a Faster R-CNN with these options uses (the default: 8× each level's
    stride), after checking the options; a clear error names the one that does not fit."""
    if fpn_from not in (2, 3, 4):
        raise ConfigError(f"--fpn-from is 2, 3 or 4 (the finest pyramid level), not {fpn_from}")
    if roi_batch < 1:
        raise ConfigError(f"--roi-batch must be at least 1, not {roi_batch}")
    first = fpn_from - 2
    n_levels = len(STAGES) - first + 1  # the stages used, and the pooled level on top
    sizes = tuple(anchor_sizes or ANCHOR_SIZES[first:])
    if len(sizes) != n_levels or any(v < 1 for v in sizes):
        raise ConfigError(f"--anchors needs one positive size per pyramid level P{fpn_from}–P6 ({n_levels}), "
                          f"got {len(sizes)}: {','.join(map(str, sizes))}")
    return sizes


def faster_rcnn(depth: int, num_classes: int, latent_channels: int | None = None, window_px: int = 192,
                anchor_sizes: tuple[int, ...] | None = None, fpn_channels: int = 128, roi_batch: int = 128,
                fpn_from: int = 2) -> FasterRCNN:
    """Faster R-CNN with an FPN over a (s)ResNet trunk. ``num_classes`` excludes background.
    ``fpn_from`` is the finest level (2: P2–P6, 3: P3–P6); ``anchor_sizes`` gives one size per
    level (default: 32 px at P2, doubling per level)."""
    anchor_sizes = detector_anchors(fpn_from, anchor_sizes, roi_batch)
    first = fpn_from - 2
    body = trunk(depth, latent_channels)
    levels = {s: str(i) for i, s in enumerate(STAGES[first:])}
    backbone = BackboneWithFPN(body, levels, _channels(depth)[first:], fpn_channels)
    gen = LatentAnchorGenerator if latent_channels is not None else AnchorGenerator
    anchors = gen(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    model = FasterRCNN(backbone, num_classes + 1, rpn_anchor_generator=anchors,
                       min_size=window_px, max_size=window_px, box_detections_per_img=50,
                       box_batch_size_per_image=roi_batch,
                       box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(len(levels))], 7, 2))
    model.transform = LatentTransform() if latent_channels is not None else FixedSizeTransform(
        window_px, window_px, model.transform.image_mean, model.transform.image_std)
    model.input_kind = "latent" if latent_channels is not None else "pixels"
    return model


class DeepLabV3(nn.Module):
    """DeepLabV3 (ASPP head) on a (s)ResNet trunk; logits at the target's resolution: 16× the
    latent window for ŷ, the input size for pixels. Deep trunks (50, 101) dilate their last
    two stages (output stride 8), as torchvision's; BasicBlock trunks (18, 34) cannot, and
    keep stride 32."""

    def __init__(self, depth: int, num_classes: int, latent_channels: int | None = None):
        super().__init__()
        self.body = trunk(depth, latent_channels, dilate=depth >= 50)
        self.head = DeepLabHead(_channels(depth)[-1], num_classes)
        self.scale = CELL if latent_channels is not None else 1
        self.input_kind = "latent" if latent_channels is not None else "pixels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        return F.interpolate(out, size=(self.scale * x.shape[-2], self.scale * x.shape[-1]), mode="bilinear",
                             align_corners=False)
