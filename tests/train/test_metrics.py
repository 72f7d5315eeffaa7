"""The detection evaluator agrees with pycocotools fed by hand; mIoU on a hand-made case."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.train.metrics import ConfusionMatrix, detection_metrics


def test_detection_metrics_agree_with_pycocotools_on_a_hand_made_case():
    # two images, two classes; image 1: a hit, a miss-localised box, a false positive;
    # image 2: a difficult object (ignored) that a detection matches, and one missed object
    targets = [
        {"boxes": torch.tensor([[10., 10., 50., 50.], [60., 60., 100., 90.]]), "labels": torch.tensor([0, 1]),
         "difficult": torch.tensor([False, False])},
        {"boxes": torch.tensor([[0., 0., 30., 30.], [40., 40., 80., 80.]]), "labels": torch.tensor([0, 1]),
         "difficult": torch.tensor([True, False])},
    ]
    preds = [
        {"boxes": torch.tensor([[12., 11., 50., 52.], [70., 62., 100., 90.], [0., 0., 5., 5.]]),
         "scores": torch.tensor([0.9, 0.8, 0.3]), "labels": torch.tensor([0, 1, 0])},
        {"boxes": torch.tensor([[1., 1., 30., 29.]]), "scores": torch.tensor([0.7]),
         "labels": torch.tensor([0])},
    ]
    got = detection_metrics(preds, targets, 2)
    # the same case written as COCO records by hand (xywh, 1-based ids, difficult as crowd)
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 60, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [40, 40, 40, 40], "area": 1600, "iscrowd": 0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([
            {"image_id": 1, "category_id": 1, "bbox": [12, 11, 38, 41], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [70, 62, 30, 28], "score": 0.8},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3},
            {"image_id": 2, "category_id": 1, "bbox": [1, 1, 29, 28], "score": 0.7}])
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert got["map"] == pytest.approx(ev.stats[0]) and got["ap50"] == pytest.approx(ev.stats[1])
    # class 0: its one countable object found first (AP50 1); class 1: one of two found, with
    # the higher score (AP50 0.5 by COCO's 101-point interpolation: precision 1 up to recall 0.5)
    assert got["ap50_per_class"][0] == pytest.approx(1.0)
    assert got["ap50_per_class"][1] == pytest.approx(51 / 101)


def test_miou_ignores_void_pixels():
    truth = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    miou, per = cm.miou()
    # class 0: 2 right of 3 true / 2 predicted → 2/3; class 1: 3 of 3 true, 4 predicted → 3/4; class 2: 1/1
    assert per == pytest.approx([2 / 3, 3 / 4, 1.0]) and miou == pytest.approx(np.mean([2 / 3, 3 / 4, 1.0]))
