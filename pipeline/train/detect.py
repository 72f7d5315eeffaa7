"""Training detection (Faster R-CNN) and segmentation (DeepLabV3) models straight from ŷ.

The loader yields latent windows with their targets moved exactly with the crop and flip
(`pipeline.loader.targets`); evaluation runs on each val image's whole grid (batch 1) with
pycocotools' COCOeval (mAP@[.5:.95], AP50) or a confusion matrix (mIoU).

Training targets leave out ``difficult`` and crowd boxes (they cannot be learnt as
instances); evaluation ignores them instead of counting them (`pipeline.train.metrics`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.targets import IGNORE, detection_collate
from pipeline.models.registry import MODELS, create_model
from pipeline.train.metrics import ConfusionMatrix, detection_metrics


@dataclass(frozen=True)
class DetectConfig:
    data: str  # a latent dataset converted from a detection source (voc, coco, openimages boxes)
    task: str = "detect"  # or "segment"
    arch: str = "fasterrcnn-sresnet18"
    epochs: int = 12
    batch_size: int = 8
    lr: float = 0.02
    weight_decay: float = 1e-4
    window: int = 12  # latent cells (12 → 192 px)
    workers: int = 2
    seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    cache: str | None = None
    out: str | None = None
    classes: tuple[int, ...] | None = None  # train on these classes only (others' boxes dropped)
    eval_every: int = 1  # evaluate after every this many epochs (and after the last)
    pixels: bool = False  # baseline: ``data`` is the detection source (voc, coco), cut like ŷ
    resume: bool = False  # continue from out/last.pt (saved at every epoch's end) at the next epoch

    def __post_init__(self):
        if self.task not in ("detect", "segment"):
            raise ConfigError(f"task is detect or segment, not {self.task!r}")
        spec = MODELS.get(self.arch)
        kind = "pixels" if self.pixels else "latent"
        if spec is None or spec.task != self.task or spec.input != kind:
            choices = [n for n, s in MODELS.items() if s.task == self.task and s.input == kind]
            raise ConfigError(f"--model for {self.task} from {'pixels' if self.pixels else 'ŷ'} is one of "
                              f"{', '.join(choices)}, not {self.arch!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.window < 2:
            raise ConfigError("--epochs and --batch-size must be at least 1 and --window at least 2")


def detection_loader(cfg: DetectConfig, split: str, train: bool):
    """(dataset, DataLoader) of ``split``: latent windows, or with ``cfg.pixels`` the source's
    pixels cut by the same rule (`pipeline.train.pixel_detect`)."""
    target = "detection" if cfg.task == "detect" else "segmentation"
    window = (cfg.window, cfg.window) if train else None
    # training drops each worker's last partial batch: DeepLabV3's ASPP pooling normalises a
    # 1x1 map, which a batch of one cannot
    common = {"batch_size": cfg.batch_size if train else 1, "num_workers": cfg.workers,
              "collate_fn": detection_collate, "drop_last": train}
    if cfg.pixels:
        from pipeline.train.pixel_detect import PixelDetectionDataset

        ds = PixelDetectionDataset(cfg.data, split, window, target, cfg.seed)
        if train:  # an order seeded by (seed, epoch), split over DDP ranks: a resumed run's too
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            ds.sampler = torch.utils.data.DistributedSampler(
                ds, num_replicas=torch.distributed.get_world_size() if dist else 1,
                rank=torch.distributed.get_rank() if dist else 0, shuffle=True, seed=cfg.seed, drop_last=True)
        return ds, DataLoader(ds, sampler=ds.sampler, **common)
    ds = LatentShardDataset(LatentLoaderConfig(cfg.data, split=split, train=train, seed=cfg.seed,
                                               window=window, target=target, cache=cfg.cache))
    return ds, DataLoader(ds, persistent_workers=False, **common)


def trainable(target: dict, classes: tuple[int, ...] | None, device="cpu") -> dict:
    """What Faster R-CNN trains on: the boxes without difficult / crowd ones (and classes
    outside ``classes``), labels shifted by one (torchvision's class 0 is the background)."""
    keep = ~(target["difficult"] | target["iscrowd"])
    if classes is not None:
        keep &= torch.isin(target["labels"], torch.tensor(classes, dtype=torch.int64))
    return {"boxes": target["boxes"][keep].to(device), "labels": (target["labels"][keep] + 1).to(device)}


def relabel(target: dict, label_map: torch.Tensor) -> dict:
    """``target`` with labels mapped through ``label_map`` (class → new index, −1: dropped)."""
    new = label_map[target["labels"]]
    keep = new >= 0
    return {**{k: v[keep] for k, v in target.items() if k != "mask"}, "labels": new[keep]}


def _save_last(out: Path, cfg: DetectConfig, model, opt, epoch: int, step: int, history: list) -> None:
    """``out/last.pt`` at an epoch's end: what `--resume` goes on from, written whole."""
    tmp = out / f".last.pt.{os.getpid()}.tmp"
    torch.save({"epoch": epoch, "step": step, "history": history, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "config": asdict(cfg)},
               tmp)
    os.replace(tmp, out / "last.pt")


def check_targets(data, cfg: DetectConfig) -> None:
    """Refuse a dataset that has nothing to learn for the task: no boxes, or no masks."""
    names = set(data.index.column_names)
    col = "num_boxes" if cfg.task == "detect" else "mask_offset"
    if col not in names or data.index.column(col).null_count == data.index.num_rows:
        what = "boxes" if cfg.task == "detect" else "class masks"
        raise ConfigError(f"{cfg.data} holds no {what}: convert a source that has them (voc, coco"
                          f"{', openimages' if cfg.task == 'detect' else ''}) to train {cfg.task}")


def build_model(cfg: DetectConfig, latent_channels: int, num_classes: int) -> torch.nn.Module:
    extra = {"window_px": CELL * cfg.window} if cfg.task == "detect" else {}
    # (pixels: ``latent_channels`` is 3, the RGB input)
    # segmentation: background (0) and one class per name (mask value = class + 1)
    return create_model(cfg.arch, latent_channels, num_classes + (cfg.task == "segment"), **extra)


@torch.no_grad()
def evaluate(model, loader: DataLoader, task: str, num_classes: int,
             label_map: torch.Tensor | None = None) -> dict:
    model.eval()
    device = next(model.parameters()).device
    if task == "detect":
        preds, targets = [], []
        for y, ts in loader:
            # the model's labels count the background as 0: back to the dataset's classes
            preds += [{"boxes": p["boxes"].cpu(), "scores": p["scores"].cpu(),
                       "labels": p["labels"].cpu() - 1} for p in model(y.to(device))]
            targets += ts if label_map is None else [relabel(t, label_map) for t in ts]
        return detection_metrics(preds, targets, num_classes)
    cm = ConfusionMatrix(num_classes + 1, IGNORE)
    for y, ts in loader:
        cm.update(model(y.to(device)).argmax(1).cpu(), torch.stack([t["mask"] for t in ts]))
    miou, per_class = cm.miou()
    return {"miou": miou, "iou_per_class": per_class}


def train_detection(cfg: DetectConfig, log: Callable[[dict], None] = print,
                    model: torch.nn.Module | None = None,
                    on_batch: Callable[[int, int, float], None] | None = None,
                    label_map: torch.Tensor | None = None, wrap_model: Callable = lambda m: m,
                    rank: int = 0) -> dict:
    """Train ``cfg.epochs`` epochs, evaluating after each; with ``out``: ``model.pt`` (weights,
    arch, classes), ``metrics.jsonl``. ``model`` continues from given weights; ``label_map``
    (detection) trains and evaluates on a subset of the classes, renumbered (class → new
    index, −1: boxes dropped), as few-shot base training does.

    Under torch.distributed (Ray Train), ``wrap_model`` makes the training module (DDP) and
    each rank reads its own share of the shards; rank 0 alone evaluates, logs and saves."""
    torch.manual_seed(cfg.seed)
    train_ds, train_loader = detection_loader(cfg, cfg.train_split, True)
    _, val_loader = detection_loader(cfg, cfg.val_split, False)
    classes = train_ds.classes
    if not cfg.pixels:
        check_targets(train_ds.data, cfg)
    M = 3 if cfg.pixels else train_ds.data.manifest["codec"]["M"]
    n_classes = len(classes) if label_map is None else int((label_map >= 0).sum())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (model or build_model(cfg, M, n_classes)).to(device)
    net = wrap_model(model)  # what trains (DDP under Ray); ``model`` is evaluated and saved
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    steps_per_epoch = (len(train_ds) // cfg.batch_size if cfg.pixels
                       else train_ds.num_batches(cfg.batch_size, cfg.workers))
    total, warm, step = cfg.epochs * steps_per_epoch, min(100, steps_per_epoch), 0
    out = Path(cfg.out) if cfg.out and rank == 0 else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    history, start = [], 0
    last = Path(cfg.out or "") / "last.pt"
    if cfg.resume and cfg.out and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        diff = sorted(k for k, v in asdict(cfg).items() if k != "resume" and state["config"].get(k) != v)
        if diff:
            raise ConfigError(f"{last} was saved by a run with other {', '.join(diff)}; resume with the "
                              "same options, or train into another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, step, history = state["epoch"] + 1, state["step"], state["history"]
        log({"resumed": str(last), "epoch": start})
    for epoch in range(start, cfg.epochs):
        train_ds.set_epoch(epoch)
        net.train()
        t0, loss_sum, n = time.perf_counter(), 0.0, 0
        for y, targets in train_loader:
            lr = cfg.lr * (min(1.0, (step + 1) / warm)) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            if cfg.task == "detect":
                if label_map is not None:
                    targets = [relabel(t, label_map) for t in targets]
                losses = net(y.to(device), [trainable(t, cfg.classes, device) for t in targets])
                loss = sum(losses.values())
            else:
                masks = torch.stack([t["mask"] for t in targets]).to(device)
                loss = F.cross_entropy(net(y.to(device)), masks, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, n, loss_sum = step + 1, n + 1, loss_sum + loss.item()
            if on_batch:
                on_batch(epoch, n, loss_sum / n)
        rec = {"epoch": epoch, "loss": loss_sum / max(n, 1), "seconds": time.perf_counter() - t0}
        if not (epoch + 1) % cfg.eval_every or epoch + 1 == cfg.epochs:
            if rank == 0:  # every rank reports (Ray Train's report is collective); rank 0 evaluates
                rec.update(evaluate(model, val_loader, cfg.task, n_classes, label_map))
            history.append(rec)
            log(rec)
            if out:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if out:
            _save_last(out, cfg, model, opt, epoch, step, history)
    if out:
        torch.save({"arch": cfg.arch, "classes": classes, "latent_channels": M, "config": asdict(cfg),
                    "state_dict": model.state_dict()}, out / "model.pt")
    return {"history": history, "classes": classes, "model": model}
