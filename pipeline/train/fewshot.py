"""Two-stage fine-tuning (TFA, Wang et al. 2020) for few-shot classification on ŷ.

Stage 1 trains the whole network on the base classes. Stage 2 freezes everything but the
last layer and fits a new classifier over base + novel classes (novel weights fresh, base
weights copied) on k samples per class, for several k and seeds; accuracy is measured over
all classes on the novel and on the base classes' validation samples.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.stages import crop_and_flip
from pipeline.train.classify import TrainConfig, train_classifier
from pipeline.train.data import InputSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FewShotConfig:
    input: InputSpec
    novel: tuple[str, ...]  # class names held out of stage 1
    arch: str = "sresnet18"
    base_epochs: int = 10
    lr: float = 0.05
    shots: tuple[int, ...] = (1, 2, 3, 5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    classifier: str = "cosine"  # or "linear"
    head_steps: int = 300
    head_lr: float = 0.01
    cosine_scale: float = 20.0
    train_split: str = "train"
    val_split: str = "val"
    stem: dict = field(default_factory=dict)


class CosineHead(nn.Module):
    def __init__(self, dim: int, classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).t()


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled backbone features, on the CPU (the model may live on a GPU)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.flatten(model.pool(model.forward_features(x.to(device))), 1).cpu()


def _val_features(model, cfg: FewShotConfig) -> tuple[torch.Tensor, torch.Tensor]:
    ds = LatentShardDataset(LatentLoaderConfig(cfg.input.data, split=cfg.val_split, train=False,
                                               window=cfg.input.window))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=cfg.input.workers)
    feats, labels = zip(*[(_features(model, x), y) for x, y in loader], strict=True)
    f, y = torch.cat(feats), torch.cat(labels)
    return f[y >= 0], y[y >= 0]


def _support(ds: LatentShardDataset, model, k: int, seed: int, window) -> tuple[torch.Tensor, torch.Tensor]:
    """k samples per class, drawn with ``seed``, read by key (random access), centre-cropped."""
    by_class: dict[int, list[str]] = {}
    cols = ds.data.index.select(["key", "label", "split"]).to_pylist()
    for r in cols:
        if r["label"] is not None and r["split"] == ds.cfg.split:
            by_class.setdefault(r["label"], []).append(r["key"])
    rng = random.Random(seed)
    xs, ys = [], []
    for label in sorted(by_class):
        keys, taken = sorted(by_class[label]), 0
        rng.shuffle(keys)
        for key in keys:  # a corrupt sample is skipped; the next one of its class stands in
            if taken == k:
                break
            try:
                xs.append(crop_and_flip(ds[key][0], window, None))
            except Exception as exc:  # noqa: BLE001
                log.warning("few-shot support: skipping %s: %s", key, exc)
                continue
            ys.append(label)
            taken += 1
    return _features(model, torch.stack(xs)), torch.tensor(ys)


def _fit_head(cfg: FewShotConfig, base_fc: nn.Linear, base: list[int], n_classes: int,
              f: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    dim = f.shape[1]
    if cfg.classifier == "cosine":
        head: nn.Module = CosineHead(dim, n_classes, cfg.cosine_scale)
    else:
        head = nn.Linear(dim, n_classes)
    with torch.no_grad():  # base classes start from the stage-1 classifier
        head.weight[base] = base_fc.weight[base].detach().clone()
        if isinstance(head, nn.Linear):
            head.bias.zero_()
            head.bias[base] = base_fc.bias[base].detach().clone()
    opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
    for _ in range(cfg.head_steps):
        opt.zero_grad()
        F.cross_entropy(head(f), y).backward()
        opt.step()
    return head


def run_fewshot(cfg: FewShotConfig, log=print) -> dict:
    train_ds = LatentShardDataset(LatentLoaderConfig(cfg.input.data, split=cfg.train_split, train=False,
                                                     window=cfg.input.window))
    classes = train_ds.classes
    unknown = set(cfg.novel) - set(classes)
    if unknown:
        raise ConfigError(f"novel classes {sorted(unknown)} are not in the dataset's classes {classes}")
    novel = [classes.index(c) for c in cfg.novel]
    base = [i for i in range(len(classes)) if i not in novel]
    stage1 = train_classifier(TrainConfig(cfg.input, arch=cfg.arch, epochs=cfg.base_epochs, lr=cfg.lr,
                                          classes=tuple(base), stem=cfg.stem), log)
    model = stage1["model"].eval()
    val_f, val_y = _val_features(model, cfg)
    is_novel = torch.isin(val_y, torch.tensor(novel))
    rows = []
    for k in cfg.shots:
        accs = []
        for seed in cfg.seeds:
            f, y = _support(train_ds, model, k, seed, cfg.input.window)
            head = _fit_head(cfg, copy.deepcopy(model.fc), base, len(classes), f, y, seed)
            with torch.no_grad():
                pred = head(val_f).argmax(1)
            hit = (pred == val_y).float()
            accs.append((hit[is_novel].mean().item(), hit[~is_novel].mean().item()))
        a = np.asarray(accs)
        rows.append({"shots": k, "novel_mean": a[:, 0].mean(), "novel_std": a[:, 0].std(),
                     "base_mean": a[:, 1].mean(), "base_std": a[:, 1].std(), "seeds": len(cfg.seeds)})
    return {"rows": rows, "base_classes": [classes[i] for i in base], "novel_classes": list(cfg.novel),
            "stage1": stage1["history"][-1], "classifier": cfg.classifier, "arch": cfg.arch}
