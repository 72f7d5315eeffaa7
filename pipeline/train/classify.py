"""Classification from ŷ or pixels: the task the training engine runs, and its evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.registry import MODELS, create_model
from pipeline.train.data import InputSpec, make_loader
from pipeline.train.engine import RunOptions, Schedule, fit, jsonable, seed_epoch


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
    out: str | None = None  # folder for model.pt, last.pt and metrics.jsonl
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


#: what must match between a run and the one that resumes it
RESUME_KEYS = ("input", "arch", "epochs", "lr", "weight_decay", "label_smoothing", "train_split",
               "classes", "stem", "seed")


class ClassifyTask:
    """Classification as an engine task (`pipeline.train.engine`): cross-entropy over the
    labelled samples of a batch (unlabelled ones and classes outside ``classes`` count for
    nothing, so batch shapes stay equal across DDP ranks), top-1/top-5 each epoch."""

    def __init__(self, cfg: TrainConfig):
        torch.manual_seed(cfg.seed)
        if (MODELS[cfg.arch].input == "latent") != (cfg.input.kind == "latent"):
            raise ConfigError(f"--model {cfg.arch} takes {MODELS[cfg.arch].input}, the input is "
                              f"{cfg.input.kind}")
        self.cfg = cfg
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.train = make_loader(cfg.input, cfg.train_split, True)
        self.val = make_loader(cfg.input, cfg.val_split, False)
        self.classes = self.train.classes
        in_ch = self.train.codec["M"] if self.train.codec else 3
        self.model = create_model(cfg.arch, in_ch, len(self.classes), **cfg.stem).to(self.device)
        ds = self.train.dataset
        self.mid_epoch = hasattr(ds, "load_state_dict")
        self.steps_per_epoch = (ds.num_batches(cfg.input.batch_size, cfg.input.workers)
                                if hasattr(ds, "num_batches") else len(self.train.loader))
        self.schedule = Schedule(cfg.epochs, cfg.lr, cfg.weight_decay, warmup=self.steps_per_epoch)
        self.run = RunOptions(cfg.out, cfg.resume, cfg.checkpoint_every)
        self.config = jsonable(asdict(cfg))
        self.resume_keys = RESUME_KEYS
        self.keep = torch.tensor(cfg.classes) if cfg.classes is not None else None

    def batches(self, epoch: int, skip: int):
        ds = self.train.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        seed_epoch(self.train.generator, self.cfg.seed, epoch)
        if skip:
            ds.load_state_dict({"epoch": epoch, "batches": skip, "batch_size": self.cfg.input.batch_size,
                                "workers": self.cfg.input.workers})
        return self.train.loader

    def loss(self, net, batch):
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        logits = net(x)
        mask = y >= 0
        if self.keep is not None:
            mask &= torch.isin(y, self.keep.to(self.device))
        per = F.cross_entropy(logits, y.clamp_min(0), reduction="none",
                              label_smoothing=self.cfg.label_smoothing)
        loss = (per * mask).sum() / mask.sum().clamp_min(1)
        n = int(mask.sum())
        correct = ((logits.argmax(1) == y) & mask).sum().item()
        return loss, {"n": n, "loss": loss.item() * n, "correct": correct}

    def summary(self, sums: dict, seconds: float) -> dict:
        n = max(sums.get("n", 0), 1)
        return {"train_loss": sums.get("loss", 0.0) / n, "train_acc": sums.get("correct", 0) / n,
                "samples_per_s": sums.get("n", 0) / seconds}

    def evaluate(self, rank: int) -> dict:
        ev = evaluate(self.model, self.val.loader, self.device, self.cfg.classes)
        return {"val_top1": ev["top1"], "val_top5": ev["top5"], "val_n": ev["n"]}

    def saved(self) -> dict:
        codec = self.train.codec
        return {"task": "classify", "arch": self.cfg.arch, "classes": self.classes,
                "codec_fingerprint": codec["fingerprint"] if codec else None}


def train_classifier(cfg: TrainConfig, log: Callable[[dict], None] = print,
                     wrap_model: Callable = lambda m: m, rank: int = 0,
                     on_batch: Callable[[int, int, int, float], None] | None = None) -> dict:
    """Train, evaluate each epoch; with ``cfg.out`` (rank 0) ``model.pt``, ``metrics.jsonl`` and
    ``last.pt`` (`pipeline.train.engine.fit`). With ``cfg.resume`` a run starts from
    ``last.pt`` at the exact next sample of its epoch and ends with the weights an
    uninterrupted run ends with.

    Returns ``{"history", "classes", "batches_per_epoch", "model"}``.
    """
    task = ClassifyTask(cfg)
    r = fit(task, log, on_batch, wrap_model, rank)
    return {"history": r.history, "classes": task.classes, "batches_per_epoch": r.batches_per_epoch,
            "model": r.model}
