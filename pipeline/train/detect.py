"""Training detection (Faster R-CNN) and segmentation (DeepLabV3) models straight from ŷ.

The loader yields latent windows with their targets moved exactly with the crop and flip
(`pipeline.loader.targets`); evaluation runs on each val image's whole grid (batch 1) with
pycocotools' COCOeval (mAP@[.5:.95], AP50) or a confusion matrix (mIoU).

Training targets leave out ``difficult`` and crowd boxes (they cannot be learnt as
instances); evaluation ignores them instead of counting them (`pipeline.train.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.targets import IGNORE, detection_collate
from pipeline.models.detection import detector_anchors
from pipeline.models.registry import MODELS, create_model
from pipeline.models.transfer import load_trunk
from pipeline.train.data import Augment
from pipeline.train.engine import RunOptions, Schedule, fit, jsonable, seed_epoch
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
    resume: bool = False  # continue from out/last.pt at the exact next batch (pixels: the next epoch)
    checkpoint_every: int = 0  # also save last.pt every this many steps (ŷ inputs only)
    augment: Augment = Augment()  # the training windows' geometry, the same rule for ŷ and pixels
    init_from: str | None = None  # a classifier's model.pt on the same representation: the trunk starts there
    roi_batch: int = 128  # RoIs sampled per image for Faster R-CNN's box head (torchvision's default: 512)
    fpn_from: int = 2  # the finest pyramid level: 2 (P2–P6) or 3 (P3–P6)
    anchors: tuple[int, ...] | None = None  # one anchor size per level, in pixels (None: 32·2^(level−2));
    # a detection config records the sizes it resolves to, so a resumed or read-back run is
    # refused when the default moves

    def __post_init__(self):
        if self.task not in ("detect", "segment"):
            raise ConfigError(f"task is detect or segment, not {self.task!r}")
        spec = MODELS.get(self.arch)
        kind = "pixels" if self.pixels else "latent"
        if spec is None or spec.task != self.task or spec.input != kind:
            choices = [n for n, s in MODELS.items() if s.task == self.task and s.input == kind]
            raise ConfigError(f"--model for {self.task} from {'pixels' if self.pixels else 'ŷ'} is one of "
                              f"{', '.join(choices)}, not {self.arch!r}")
        if self.task == "segment":
            defaults = {f.name: f.default for f in fields(self)}
            if any(getattr(self, k) != defaults[k] for k in ("roi_batch", "fpn_from", "anchors")):
                raise ConfigError("--roi-batch, --fpn-from and --anchors shape Faster R-CNN: `train detect` "
                                  "only")
        else:
            object.__setattr__(self, "anchors", detector_anchors(self.fpn_from, self.anchors, self.roi_batch))
        if self.epochs < 1 or self.batch_size < 1 or self.window < 2:
            raise ConfigError("--epochs and --batch-size must be at least 1 and --window at least 2")


def detection_loader(cfg: DetectConfig, split: str, train: bool):
    """(dataset, DataLoader) of ``split``: latent windows, or with ``cfg.pixels`` the source's
    pixels cut by the same rule (`pipeline.train.pixel_detect`). The DataLoader draws from its
    own ``generator`` (`pipeline.train.engine.seed_epoch`)."""
    target = "detection" if cfg.task == "detect" else "segmentation"
    window = (cfg.window, cfg.window) if train else None
    # training drops each worker's last partial batch: DeepLabV3's ASPP pooling normalises a
    # 1x1 map, which a batch of one cannot
    common = {"batch_size": cfg.batch_size if train else 1, "num_workers": cfg.workers,
              "collate_fn": detection_collate, "drop_last": train,
              "generator": torch.Generator().manual_seed(cfg.seed)}
    if cfg.pixels:
        from pipeline.train.pixel_detect import PixelDetectionDataset

        ds = PixelDetectionDataset(cfg.data, split, window, target, cfg.seed,
                                   augment=cfg.augment.latent() if train else None,
                                   members=cfg.augment.latent_members() if train else None)
        if train:  # an order seeded by (seed, epoch), split over DDP ranks: a resumed run's too
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            ds.sampler = torch.utils.data.DistributedSampler(
                ds, num_replicas=torch.distributed.get_world_size() if dist else 1,
                rank=torch.distributed.get_rank() if dist else 0, shuffle=True, seed=cfg.seed, drop_last=True)
        return ds, DataLoader(ds, sampler=ds.sampler, **common)
    ds = LatentShardDataset(LatentLoaderConfig(cfg.data, split=split, train=train, seed=cfg.seed,
                                               window=window, target=target, cache=cfg.cache,
                                               augment=cfg.augment.latent() if train else None,
                                               members=cfg.augment.latent_members() if train else None))
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


def check_targets(data, cfg: DetectConfig) -> None:
    """Refuse a dataset that has nothing to learn for the task: no boxes, or no masks."""
    names = set(data.index.column_names)
    col = "num_boxes" if cfg.task == "detect" else "mask_offset"
    if col not in names or data.index.column(col).null_count == data.index.num_rows:
        what = "boxes" if cfg.task == "detect" else "class masks"
        raise ConfigError(f"{cfg.data} holds no {what}: convert a source that has them (voc, coco"
                          f"{', openimages' if cfg.task == 'detect' else ''}) to train {cfg.task}")


def build_model(cfg: DetectConfig, latent_channels: int, num_classes: int) -> torch.nn.Module:
    extra = {"window_px": CELL * cfg.window, "roi_batch": cfg.roi_batch, "fpn_from": cfg.fpn_from,
             "anchor_sizes": cfg.anchors} if cfg.task == "detect" else {}
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


class DetectTask:
    """Detection or segmentation as an engine task (`pipeline.train.engine`): Faster R-CNN's
    summed losses or per-pixel cross-entropy; rank 0 evaluates (batch 1, whole grids)."""

    def __init__(self, cfg: DetectConfig, model: torch.nn.Module | None = None,
                 label_map: torch.Tensor | None = None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.label_map = cfg, label_map
        self.train_ds, self.train_loader = detection_loader(cfg, cfg.train_split, True)
        _, self.val_loader = detection_loader(cfg, cfg.val_split, False)
        self.classes = self.train_ds.classes
        if not cfg.pixels:
            check_targets(self.train_ds.data, cfg)
        self.channels = 3 if cfg.pixels else self.train_ds.data.manifest.latent_channels
        self.num_classes = len(self.classes) if label_map is None else int((label_map >= 0).sum())
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model or build_model(cfg, self.channels, self.num_classes)
        if cfg.init_from:
            load_trunk(self.model, cfg.init_from)
        self.model = self.model.to(self.device)
        self.mid_epoch = not cfg.pixels
        self.steps_per_epoch = (len(self.train_ds) // cfg.batch_size if cfg.pixels
                                else self.train_ds.num_batches(cfg.batch_size, cfg.workers, drop_last=True))
        self.schedule = Schedule(cfg.epochs, cfg.lr, cfg.weight_decay, warmup=min(100, self.steps_per_epoch))
        self.run = RunOptions(cfg.out, cfg.resume, cfg.checkpoint_every, cfg.eval_every)
        self.config = jsonable(asdict(cfg))
        self.resume_keys = tuple(k for k in self.config  # (the run may have moved: not its folder)
                                 if k not in ("resume", "eval_every", "checkpoint_every", "out"))

    def batches(self, epoch: int, skip: int):
        self.train_ds.set_epoch(epoch)
        seed_epoch(self.train_loader.generator, self.cfg.seed, epoch)
        if skip:
            self.train_ds.load_state_dict({"epoch": epoch, "batches": skip, "batch_size": self.cfg.batch_size,
                                           "workers": self.cfg.workers, "drop_last": True})
        return self.train_loader

    def loss(self, net, batch):
        y, targets = batch
        if self.cfg.task == "detect":
            if self.label_map is not None:
                targets = [relabel(t, self.label_map) for t in targets]
            losses = net(y.to(self.device), [trainable(t, self.cfg.classes, self.device) for t in targets])
            loss = sum(losses.values())
        else:
            masks = torch.stack([t["mask"] for t in targets]).to(self.device)
            loss = F.cross_entropy(net(y.to(self.device)), masks, ignore_index=IGNORE)
        return loss, {"n": 1, "loss": loss.item()}

    def summary(self, sums: dict, seconds: float) -> dict:
        return {"train_loss": sums.get("loss", 0.0) / max(sums.get("n", 0), 1)}

    def evaluate(self, rank: int) -> dict:
        if rank:  # every rank reports (Ray Train's report is collective); rank 0 evaluates
            return {}
        return evaluate(self.model, self.val_loader, self.cfg.task, self.num_classes, self.label_map)

    def saved(self) -> dict:
        return {"task": self.cfg.task, "arch": self.cfg.arch, "classes": self.classes,
                "latent_channels": self.channels}


def train_detection(cfg: DetectConfig, log: Callable[[dict], None] = print,
                    model: torch.nn.Module | None = None,
                    on_batch: Callable[[int, int, int, float], None] | None = None,
                    label_map: torch.Tensor | None = None, wrap_model: Callable = lambda m: m,
                    rank: int = 0) -> dict:
    """Train ``cfg.epochs`` epochs, evaluating after every ``eval_every``; with ``out``:
    ``model.pt`` (weights, arch, classes), ``metrics.jsonl``, ``last.pt`` (at each epoch's end
    and every ``checkpoint_every`` steps; ŷ inputs resume mid-epoch). ``model`` continues from
    given weights; ``label_map`` (detection) trains and evaluates on a subset of the classes,
    renumbered (class → new index, −1: boxes dropped), as few-shot base training does.

    Under torch.distributed (Ray Train), ``wrap_model`` makes the training module (DDP) and
    each rank reads its own share of the shards; rank 0 alone evaluates and saves."""
    task = DetectTask(cfg, model, label_map)
    r = fit(task, log, on_batch, wrap_model, rank)
    return {"history": r.history, "classes": task.classes, "model": r.model}
