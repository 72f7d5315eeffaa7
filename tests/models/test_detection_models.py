"""Faster R-CNN and DeepLabV3 on ŷ: anchors against the 16× image, shapes, losses."""

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from pipeline.models.detection import LatentAnchorGenerator
from pipeline.models.registry import MODELS, create_model


def test_latent_anchors_are_the_anchors_of_the_image_y_hat_stands_for():
    sizes, ratios = ((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3
    # strides 4, 8, 16 of a 128 x 192 image
    feats = [torch.zeros(2, 8, 32, 48), torch.zeros(2, 8, 16, 24), torch.zeros(2, 8, 8, 12)]
    y = torch.zeros(2, 96, 8, 12)  # ŷ of a 128 x 192 image
    latent = LatentAnchorGenerator(sizes, ratios)(ImageList(y, [(128, 192)] * 2), feats)
    pixels = AnchorGenerator(sizes, ratios)(ImageList(torch.zeros(2, 3, 128, 192), [(128, 192)] * 2), feats)
    assert all(torch.equal(a, b) for a, b in zip(latent, pixels, strict=True))


def test_every_detection_and_segmentation_model_builds_and_runs():
    y = torch.randn(2, 32, 6, 6)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # an empty image
    det = create_model("fasterrcnn-sresnet18", 32, 3, window_px=96)
    det.train()
    losses = det(y, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    det.eval()
    with torch.no_grad():
        out = det(y)
    assert len(out) == 2 and all((o["boxes"] >= 0).all() and (o["boxes"] <= 96).all() for o in out)
    seg = create_model("deeplabv3-sresnet18", 32, 4)
    seg.eval()
    assert seg(y).shape == (2, 4, 96, 96)  # 16x the window: one logit per pixel of the window
    pix = create_model("deeplabv3-resnet18", 3, 4)
    pix.eval()
    assert pix(torch.rand(1, 3, 96, 96)).shape == (1, 4, 96, 96)
    assert {MODELS[n].task for n in ("fasterrcnn-resnet50", "deeplabv3-sresnet101", "sresnet18")} == {
        "detect", "segment", "classify"}


def test_detector_options_shape_the_pyramid_anchors_and_roi_sampling():
    import pytest

    from pipeline.errors import ConfigError
    from pipeline.train.detect import DetectConfig

    det = create_model("fasterrcnn-sresnet18", 32, 3, window_px=96, fpn_from=3, roi_batch=16)
    # P3–P6: three stages feed the FPN (and its pooled level), one anchor size per level, 8× its stride
    assert det.rpn.anchor_generator.sizes == ((64,), (128,), (256,), (512,))
    assert det.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    assert det.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    det.train()
    y = torch.randn(2, 32, 6, 6)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 60.0, 50.0]]), "labels": torch.tensor([2])}] * 2
    assert all(torch.isfinite(v) for v in det(y, targets).values())
    with pytest.raises(ConfigError, match=r"one positive size per pyramid level P2–P6 \(5\), got 3"):
        create_model("fasterrcnn-sresnet18", 32, 3, anchor_sizes=(8, 16, 32))
    with pytest.raises(ConfigError, match="--fpn-from is 2, 3 or 4"):
        create_model("fasterrcnn-resnet18", 3, 3, fpn_from=5)
    with pytest.raises(ConfigError, match="`train detect` only"):
        DetectConfig("x", "segment", "deeplabv3-sresnet18", roi_batch=64)
