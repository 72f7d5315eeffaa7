"""Classification training and evaluation, the same loop for ŷ and for pixels, local or DDP."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.registry import MODELS, create_model
from pipeline.train.data import InputSpec, make_loader

logger = logging.getLogger(__name__)


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
    out: str | None = None  # folder for checkpoint.pt, last.pt and metrics.jsonl
    seed: int = 0
    checkpoint_every: int = 0  # also save last.pt every this many steps (0: at each epoch's end only)
    resume: bool = False  # continue from out/last.pt at the exact next sample, if it is there


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


#: what must match between a run and the one that resumes it
_RESUME_KEYS = ("input", "arch", "epochs", "lr", "weight_decay", "label_smoothing", "train_split",
                "classes", "stem", "seed")


def _save_last(cfg: TrainConfig, model, opt, step: int, epoch: int, batch: int, sums: tuple,
               history: list) -> None:
    """``out/last.pt``: everything a run needs to go on from the next sample, written whole."""
    path = Path(cfg.out) / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".last.pt.{os.getpid()}.tmp")
    torch.save({"step": step, "epoch": epoch, "batch": batch, "sums": list(sums), "history": history,
                "model": getattr(model, "module", model).state_dict(), "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(), "config": _jsonable(cfg)}, tmp)
    os.replace(tmp, path)


def _load_last(cfg: TrainConfig) -> dict | None:
    path = Path(cfg.out or "") / "last.pt"
    if not (cfg.resume and cfg.out and path.is_file()):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    now, then = _jsonable(cfg), state["config"]
    diff = [k for k in _RESUME_KEYS if now.get(k) != then.get(k)]
    if diff:
        raise ConfigError(f"{path} was saved by a run with other {', '.join(diff)}; resume with the same "
                          "options, or train into another --out")
    return state


def train_classifier(cfg: TrainConfig, log: Callable[[dict], None] = print,
                     wrap_model: Callable = lambda m: m, rank: int = 0,
                     on_batch: Callable[[int, int, int, float], None] | None = None) -> dict:
    """Train, evaluate each epoch, save ``checkpoint.pt`` and ``metrics.jsonl`` (rank 0).

    ``on_batch(epoch, batch, batches_per_epoch, loss)`` is called after every step (progress).
    With ``cfg.out``, ``last.pt`` is saved at each epoch's end (and every ``checkpoint_every``
    steps); with ``cfg.resume`` a run starts from it, at the exact next sample of its epoch,
    and ends with the weights an uninterrupted run ends with.
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
    step, history, batches_per_epoch, start, skip, sums = 0, [], [], 0, 0, (0, 0.0, 0)
    if cfg.checkpoint_every and not hasattr(train_ds, "load_state_dict"):
        raise ConfigError("--checkpoint-every needs an input that resumes mid-epoch (latent shards); "
                          "pixel runs save last.pt at each epoch's end")
    last = _load_last(cfg)
    if last is not None:
        getattr(model, "module", model).load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        torch.set_rng_state(last["torch_rng"])
        step, history, start, skip, sums = (last["step"], last["history"], last["epoch"], last["batch"],
                                            tuple(last["sums"]))
        logger.info("resuming %s/last.pt: epoch %d, batch %d, step %d", cfg.out, start, skip, step)
    for epoch in range(start, cfg.epochs):
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        if skip and hasattr(train_ds, "load_state_dict"):
            train_ds.load_state_dict({"epoch": epoch, "batches": skip, "batch_size": cfg.input.batch_size,
                                      "workers": cfg.input.workers})
        elif skip:
            raise ConfigError("this input cannot resume mid-epoch; resume from an epoch's end")
        model.train()
        (seen, loss_sum, correct), batches = (sums if skip else (0, 0.0, 0)), skip
        t0, skip = time.perf_counter(), 0
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
            if cfg.out and rank == 0 and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                _save_last(cfg, model, opt, step, epoch, batches, (seen, loss_sum, correct), history)
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
            _save_last(cfg, model, opt, step, epoch + 1, 0, (0, 0.0, 0), history)
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
