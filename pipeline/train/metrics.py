"""Detection and segmentation metrics: pycocotools' COCOeval (mAP@[.5:.95], AP50, per-class
AP50, COCO's 101-point interpolated precision) and mIoU from a confusion matrix. Not a
hand-written AP: predictions and ground truth are handed to COCOeval as COCO records.

Ground truth marked ``difficult`` (VOC) or ``iscrowd`` (COCO) goes to COCOeval as crowd:
missing it costs nothing, and a detection matching it is neither a true nor a false positive.
COCOeval matches a crowd by the share of the *detection* inside it (intersection over the
detection's area), so a small detection inside a difficult box is ignored too: close to
VOC's rule for difficult objects, a little looser.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch


def coco_records(predictions: list[dict], targets: list[dict], num_classes: int) -> tuple[dict, list[dict]]:
    """(ground-truth COCO dict, detection list) from torchvision-style per-image dicts:
    predictions ``boxes`` (xyxy) / ``scores`` / ``labels``, targets ``boxes`` / ``labels`` and
    optionally ``difficult`` / ``iscrowd``. Labels are 0-based classes (no background)."""
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        images.append({"id": i + 1})
        boxes = t["boxes"].reshape(-1, 4).tolist()
        ignore = torch.zeros(len(boxes), dtype=torch.bool)
        for k in ("difficult", "iscrowd"):
            if k in t:
                ignore |= t[k].bool()
        for b, label, ign in zip(boxes, t["labels"].tolist(), ignore.tolist(), strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(ign)})
        for b, s, label in zip(p["boxes"].reshape(-1, 4).tolist(), p["scores"].tolist(), p["labels"].tolist(),
                               strict=True):
            dets.append({"image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    gt = {"info": {}, "images": images, "annotations": anns,  # pycocotools 2.0.9/10's loadRes reads info
          "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    return gt, dets


def detection_metrics(predictions: list[dict], targets: list[dict], num_classes: int) -> dict:
    """mAP@[.5:.95], AP50 and AP50 per class (nan for a class without ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, dets = coco_records(predictions, targets, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if not dets:  # nothing found: AP 0 where there was something to find, nan elsewhere
            held = {a["category_id"] - 1 for a in gt_dict["annotations"] if not a["iscrowd"]}
            return {"map": 0.0, "ap50": 0.0,
                    "ap50_per_class": [0.0 if c in held else float("nan") for c in range(num_classes)]}
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]: IoU thresholds, recall, class, area, maxDets
    per_class = []
    for k in range(num_classes):
        p = prec[0, :, k, 0, -1]
        per_class.append(float(np.mean(p[p > -1])) if (p > -1).any() else float("nan"))
    return {"map": max(0.0, float(ev.stats[0])), "ap50": max(0.0, float(ev.stats[1])),
            "ap50_per_class": per_class}


class ConfusionMatrix:
    """Pixel counts per (true, predicted) class pair; 255 in the truth is ignored."""

    def __init__(self, num_classes: int, ignore: int = 255):
        self.n, self.ignore = num_classes, ignore
        self.m = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        keep = truth != self.ignore
        t, p = truth[keep].long(), pred[keep].long()
        self.m += torch.bincount(t * self.n + p, minlength=self.n * self.n).reshape(self.n, self.n)

    def miou(self) -> tuple[float, list[float]]:
        """Mean IoU over the classes present in the truth or the predictions, and each class's."""
        inter = self.m.diag().double()
        union = self.m.sum(0).double() + self.m.sum(1).double() - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
        present = ~torch.isnan(iou)
        return (float(iou[present].mean()) if present.any() else 0.0), iou.tolist()
