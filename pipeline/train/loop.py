"""Classification training and evaluation, the same loop for ŷ and for pixels, local or DDP."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.models.registry import MODELS, create_model
from pipeline.train.data import InputSpec, make_loader


@dataclass(frozen=True)
class TrainConfig:
    input: InputSpec
    arch: str = "sresnet18"
    epochs: int = 10
    lr: float = 0.05  # SGD, momentum 0.9, cosine decay, 1 epoch linear warm-up
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    train_split: str = "train"
    val_split: str = "val"
    classes: tuple[int, ...] | None = None  # train on these labels only (few-shot base stage)
    stem: dict = field(default_factory=dict)  # sResNet stem ablation options
    out: str | None = None  # folder for checkpoint.pt and metrics.jsonl
    seed: int = 0


def evaluate(model, loader, device, classes: tuple[int, ...] | None = None) -> dict:
    """Top-1/top-5 over labelled samples; summed over DDP ranks when distributed."""
    model = getattr(model, "module", model)  # no DDP collectives during evaluation
    model.eval()
    n = top1 = top5 = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            keep = y >= 0
            if classes is not None:
                keep &= torch.isin(y, torch.tensor(classes, device=device))
            x, y = x[keep], y[keep]
            if not len(y):
                continue
            logits = model(x)
            k = min(5, logits.shape[1])
            pred = logits.topk(k, 1).indices
            top1 += (pred[:, 0] == y).sum().item()
            top5 += (pred == y[:, None]).any(1).sum().item()
            n += len(y)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([top1, top5, n], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        top1, top5, n = (int(v) for v in t.tolist())
    return {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1), "n": n}


def _lr(cfg: TrainConfig, step: int, total: int, warm: int) -> float:
    step = min(step, total - 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_classifier(cfg: TrainConfig, log: Callable[[dict], None] = print,
                     wrap_model: Callable = lambda m: m, rank: int = 0,
                     on_batch: Callable[[int, int, int, float], None] | None = None) -> dict:
    """Train, evaluate each epoch, save ``checkpoint.pt`` and ``metrics.jsonl`` (rank 0).

    ``on_batch(epoch, batch, batches_per_epoch, loss)`` is called after every step (progress).
    """
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_ds, train_loader, class_names, codec = make_loader(cfg.input, cfg.train_split, True)
    _, val_loader, _, _ = make_loader(cfg.input, cfg.val_split, False)
    in_ch = codec["M"] if codec else 3
    if (MODELS[cfg.arch].input == "latent") != (cfg.input.kind == "latent"):
        raise ValueError(f"{cfg.arch} takes {MODELS[cfg.arch].input}, the input is {cfg.input.kind}")
    model = wrap_model(create_model(cfg.arch, in_ch, len(class_names), **cfg.stem).to(device))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    steps_per_epoch = (train_ds.num_batches(cfg.input.batch_size, cfg.input.workers)
                       if hasattr(train_ds, "num_batches") else len(train_loader))
    total, warm = cfg.epochs * steps_per_epoch, steps_per_epoch
    keep = torch.tensor(cfg.classes) if cfg.classes is not None else None
    step, history, batches_per_epoch = 0, [], []
    for epoch in range(cfg.epochs):
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        model.train()
        t0, seen, loss_sum, correct, batches = time.perf_counter(), 0, 0.0, 0, 0
        for x, y in train_loader:
            batches += 1
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, total, warm)
            logits = model(x)
            # Unlabelled samples and placeholders (-1), and classes outside ``classes``, contribute
            # nothing; batch shapes stay equal across DDP ranks.
            mask = y >= 0
            if keep is not None:
                mask &= torch.isin(y, keep.to(device))
            per = F.cross_entropy(logits, y.clamp_min(0), reduction="none",
                                  label_smoothing=cfg.label_smoothing)
            loss = (per * mask).sum() / mask.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += int(mask.sum())
            loss_sum += loss.item() * int(mask.sum())
            correct += ((logits.argmax(1) == y) & mask).sum().item()
            if on_batch:
                on_batch(epoch, batches, steps_per_epoch, loss.item())
        batches_per_epoch.append(batches)
        ev = evaluate(model, val_loader, device, cfg.classes)
        rec = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_top1": ev["top1"], "val_top5": ev["top5"], "val_n": ev["n"],
               "samples_per_s": seen / (time.perf_counter() - t0), "batches": batches, "rank": rank}
        history.append(rec)
        log(rec)
        if cfg.out and rank == 0:
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            with open(Path(cfg.out) / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
    result = {"history": history, "classes": class_names, "batches_per_epoch": batches_per_epoch}
    if cfg.out and rank == 0:
        state = getattr(model, "module", model).state_dict()
        torch.save({"arch": cfg.arch, "state_dict": state, "classes": class_names,
                    "codec_fingerprint": codec["fingerprint"] if codec else None,
                    "config": _jsonable(cfg), "history": history}, Path(cfg.out) / "checkpoint.pt")
    result["model"] = getattr(model, "module", model)
    return result


def _jsonable(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=list))
