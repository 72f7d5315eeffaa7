"""Few-shot detection on ŷ with TFA's protocol (Wang et al. 2020, "Frustratingly Simple
Few-Shot Object Detection").

1. **Base training**: Faster R-CNN trained on the base classes only (novel boxes removed
   from every training image).
2. **Fine-tuning**, for each k and each seed: a k-shot set is drawn (per class, base and
   novel: images holding the class, in a seeded order, until k instances are collected; only
   that class's boxes are kept from them, TFA's sampling); everything but the last layers is
   frozen (trunk, FPN, RPN and box head, BatchNorm statistics included); the box classifier
   becomes a cosine classifier (scale 20) over all classes plus background, its base rows
   copied from stage 1 and novel rows fresh; the box regressor grows the same way. Only those
   two layers train.
3. **Evaluation** on the val split: AP50 per class (COCOeval), reported as the mean over
   novel classes and over base classes.

With ``base.pixels`` the same protocol runs on the source's pixels (`pipeline.train.pixel_detect`:
made ready as the converter makes them, cut by the same window rule), a ResNet trunk in place
of sResNet: the same k-shot draws, the same crops, the same evaluation — the pixel column of
the seed's Table 4.

The VOC 15/5 splits of TFA are built in (`VOC_SPLITS`); any other split names its novel
classes (``fewshot.json`` from `latents make-task --detection` holds one).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError
from pipeline.loader.targets import (
    Crop,
    build_target,
    choose_crop,
    crop_latent,
    detection_collate,
    pack_payload,
    target_of,
)
from pipeline.shards.dataset import LatentDataset
from pipeline.train.detect import (
    DetectConfig,
    build_model,
    detection_loader,
    evaluate,
    train_detection,
    trainable,
)
from pipeline.train.fewshot import CosineHead
from pipeline.train.pixel_detect import PixelDetectionDataset

#: TFA's three PASCAL VOC base / novel splits (novel classes; the other 15 are base).
VOC_SPLITS = {
    1: ("bird", "bus", "cow", "motorbike", "sofa"),
    2: ("aeroplane", "bottle", "cow", "horse", "sofa"),
    3: ("boat", "cat", "motorbike", "sheep", "sofa"),
}


@dataclass(frozen=True)
class FewShotDetectConfig:
    base: DetectConfig  # data, arch, base-training epochs, batch, lr, window
    novel: tuple[str, ...]
    shots: tuple[int, ...] = (1, 2, 3, 5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_steps: int = 200
    finetune_lr: float = 0.01
    cosine_scale: float = 20.0


class CosineBoxPredictor(nn.Module):
    """TFA's last layers: class scores as scaled cosine similarity (background included; the
    few-shot classifier's `CosineHead`), and class-specific box deltas from a linear layer."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0):
        super().__init__()
        self.cls_score = CosineHead(in_features, num_classes, scale)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def novel_indices(classes: list[str], novel: tuple[str, ...]) -> list[int]:
    missing = sorted(set(novel) - set(classes))
    if missing or not novel:
        raise ConfigError(f"novel classes {', '.join(missing) or '(none)'} are not among the dataset's "
                          f"classes ({', '.join(classes)})")
    return [classes.index(n) for n in novel]


def sample_shots(rows: list[dict], num_classes: int, k: int, seed: int) -> dict[str, set[int]]:
    """TFA's k-shot draw: key → classes whose boxes are kept. Per class, images holding it in
    a seeded order until at least k of its (trainable) instances are collected."""
    boxes = {r["key"]: (json.loads(r["targets"]) if r["targets"] else {}).get("boxes") or [] for r in rows}
    chosen: dict[str, set[int]] = {}
    for c in range(num_classes):
        rng = random.Random(seed * 7919 + c)
        cand = [key for key in sorted(boxes)
                if any(b["label"] == c and not b.get("flags", {}).get("difficult") for b in boxes[key])]
        rng.shuffle(cand)
        got = 0
        for key in cand:
            if got >= k:
                break
            chosen.setdefault(key, set()).add(c)
            got += sum(b["label"] == c for b in boxes[key])
    return chosen


@dataclass(frozen=True)
class Shot:
    """One k-shot image, whatever the input: its grid (cells), its window for a crop, its
    detection target for the crop, and the classes whose boxes it keeps."""

    grid: tuple[int, int]
    cut: Callable[[Crop], torch.Tensor]
    target: Callable[[Crop], dict]
    classes: set[int]


def _support(data: LatentDataset, chosen: dict[str, set[int]]) -> list[Shot]:
    """ŷ and target payloads of the k-shot images, by random access (no scan)."""
    codec = data.load_codec()
    out = []
    for key, classes in sorted(chosen.items()):
        y = codec.decode_y(data.latent_bytes(key))
        row = data.row(key)
        member = data.member_bytes(key, "json")
        mask = data.member_bytes(key, "mask.png") if row.get("mask_offset") is not None else None
        blob = pack_payload(member, mask)
        out.append(Shot((y.shape[1], y.shape[2]), lambda c, y=y: crop_latent(y, c),
                        lambda c, b=blob: build_target("detection", b, c), classes))
    return out


def _pixel_support(pixels: PixelDetectionDataset, chosen: dict[str, set[int]]) -> list[Shot]:
    """The same k-shot images as pixels, made ready as the converter makes them."""
    at = {item.key: i for i, item in enumerate(pixels.items)}
    out = []
    for key, classes in sorted(chosen.items()):
        img, meta, mask = pixels.prepared(at[key])
        out.append(Shot((img.shape[0] // CELL, img.shape[1] // CELL), lambda c, p=img: pixels.cut(p, c),
                        lambda c, m=meta, k=mask: target_of("detection", m, k, c), classes))
    return out


def _grow_predictor(old, num_classes: int, base: list[int], scale: float) -> CosineBoxPredictor:
    """A cosine predictor over background + every class; base rows copied from ``old`` (whose
    rows are background + the base classes in ``base`` order)."""
    new = CosineBoxPredictor(old.cls_score.in_features, num_classes + 1, scale)
    with torch.no_grad():
        nn.init.normal_(new.cls_score.weight, std=0.01)
        nn.init.normal_(new.bbox_pred.weight, std=0.001)
        nn.init.zeros_(new.bbox_pred.bias)
        rows = [0] + [c + 1 for c in base]  # background, then each base class's own row
        new.cls_score.weight[rows] = old.cls_score.weight
        w, b = old.bbox_pred.weight.view(-1, 4, old.bbox_pred.in_features), old.bbox_pred.bias.view(-1, 4)
        new.bbox_pred.weight.view(-1, 4, w.shape[-1])[rows] = w
        new.bbox_pred.bias.view(-1, 4)[rows] = b
    return new


def finetune(model, support, cfg: FewShotDetectConfig, seed: int) -> nn.Module:
    """Train only ``roi_heads.box_predictor`` on the support set; everything else is frozen
    and kept in eval mode (BatchNorm statistics untouched)."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.roi_heads.box_predictor
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(head.parameters(), lr=cfg.finetune_lr, momentum=0.9, weight_decay=1e-4)
    rng = random.Random(seed)
    device = next(model.parameters()).device
    window = (cfg.base.window, cfg.base.window)
    bs = min(cfg.base.batch_size, len(support))
    for step in range(cfg.finetune_steps):  # (the same draws for ŷ and pixels: same crops, same boxes)
        model.eval()
        model.roi_heads.train(), model.rpn.train()  # losses need training mode; neither holds BatchNorm
        model.training = True
        for g in opt.param_groups:
            g["lr"] = cfg.finetune_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.finetune_steps))
        batch = []
        for shot in rng.sample(support, bs):
            crop = choose_crop(shot.grid, window, rng)
            batch.append((shot.cut(crop), trainable(shot.target(crop), tuple(shot.classes), device)))
        ys, targets = detection_collate(batch)
        loss = sum(model(ys.to(device), targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


def run_fewshot_detection(cfg: FewShotDetectConfig, log=print) -> dict:
    """Base training, then every (k, seed) fine-tuning; novel / base AP50 per run and their
    mean ± std per k."""
    if cfg.base.pixels:
        pixels = PixelDetectionDataset(cfg.base.data, cfg.base.train_split, None)
        classes, channels = pixels.classes, 3
        rows = [{"key": it.key, "targets": it.targets} for it in pixels.items]
        shots_of = lambda chosen: _pixel_support(pixels, chosen)  # noqa: E731
    else:
        data = LatentDataset.open(cfg.base.data)
        classes, channels = list(data.manifest.classes), data.manifest.latent_channels
        rows = [r for r in data.index.to_pylist() if r["split"] == cfg.base.train_split]
        shots_of = lambda chosen: _support(data, chosen)  # noqa: E731
    novel = novel_indices(classes, cfg.novel)
    base = [c for c in range(len(classes)) if c not in novel]
    torch.manual_seed(cfg.base.seed)  # every (k, seed) run below is seeded on its own too
    base_model = build_model(cfg.base, channels, len(base))
    # stage 1 trains on base classes renumbered 0..B-1 (novel boxes removed)
    base_model = _base_training(cfg, base_model, base, len(classes), log)
    _, val_loader = detection_loader(cfg.base, cfg.base.val_split, False)
    runs, table = [], []
    for k in cfg.shots:
        novel_ap, base_ap = [], []
        for seed in cfg.seeds:
            model = copy.deepcopy(base_model)
            torch.manual_seed(1_000_003 * k + seed)  # the fresh novel rows: the same for this (k, seed)
            model.roi_heads.box_predictor = _grow_predictor(model.roi_heads.box_predictor, len(classes), base,
                                                            cfg.cosine_scale)
            support = shots_of(sample_shots(rows, len(classes), k, seed))
            finetune(model, support, cfg, seed)
            m = evaluate(model, val_loader, "detect", len(classes))
            per = np.array(m["ap50_per_class"], dtype=np.float64)
            runs.append({"k": k, "seed": seed, "novel_ap50": _mean_known(per[novel]),
                         "base_ap50": _mean_known(per[base]), "ap50_per_class": m["ap50_per_class"]})
            novel_ap.append(runs[-1]["novel_ap50"])
            base_ap.append(runs[-1]["base_ap50"])
            log(runs[-1])
        table.append({"k": k, "novel_ap50_mean": float(np.mean(novel_ap)),
                      "novel_ap50_std": float(np.std(novel_ap)),
                      "base_ap50_mean": float(np.mean(base_ap)), "base_ap50_std": float(np.std(base_ap))})
    return {"classes": classes, "novel": list(cfg.novel), "runs": runs, "table": table}


def _mean_known(ap: np.ndarray) -> float:
    """The mean AP over classes the val split holds (nan where it holds none of them)."""
    known = ap[~np.isnan(ap)]
    return float(known.mean()) if known.size else float("nan")


def _base_training(cfg: FewShotDetectConfig, model, base: list[int], num_classes: int, log) -> nn.Module:
    """Stage 1: the base classes only, renumbered 0..B-1 (novel boxes dropped everywhere)."""
    remap = torch.full((num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(base)] = torch.arange(len(base))
    return train_detection(cfg.base, log=log, model=model, label_map=remap)["model"]


