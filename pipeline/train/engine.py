"""One training loop for every task: the schedule, resume, metrics and the saved model.

A task (`pipeline.train.classify`, `pipeline.train.detect`) is a small plug-in: its model,
its training batches (resumable at a batch count where the input allows), the loss of one
batch, evaluation, and what ``model.pt`` keeps beside the weights. The engine owns the rest:
SGD with linear warm-up and cosine decay, ``OUT/last.pt`` (at each epoch's end and every
``checkpoint_every`` steps) and ``--resume`` from it at the exact next sample,
``OUT/metrics.jsonl`` (one record per epoch), and ``OUT/model.pt``. Under DDP (Ray Train)
every rank runs it; rank 0 alone writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.errors import ConfigError, TrainError


@dataclass(frozen=True)
class Schedule:
    """SGD (momentum 0.9): ``warmup`` steps of linear warm-up, then cosine decay to 0."""

    epochs: int
    lr: float
    weight_decay: float
    warmup: int

    def lr_at(self, step: int, total: int) -> float:
        step = min(step, total - 1)
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return 0.5 * self.lr * (1 + math.cos(math.pi * (step - self.warmup) / max(1, total - self.warmup)))


@dataclass(frozen=True)
class RunOptions:
    """Where a run writes and how it checkpoints, the same for every task."""

    out: str | None = None  # folder for last.pt, metrics.jsonl and model.pt
    resume: bool = False  # continue from out/last.pt, if it is there
    checkpoint_every: int = 0  # also save last.pt every this many steps (0: at each epoch's end)
    eval_every: int = 1  # evaluate after every this many epochs (and after the last)


class Task(Protocol):
    """What the engine needs from a task; built (and seeded) before `fit` runs it."""

    model: torch.nn.Module  # on its device; what is evaluated and saved
    schedule: Schedule
    run: RunOptions
    steps_per_epoch: int
    config: dict  # JSON-able; saved in last.pt and model.pt
    resume_keys: tuple[str, ...]  # the ``config`` entries a resumed run must share
    mid_epoch: bool  # whether `batches` can start after ``skip`` batches

    def batches(self, epoch: int, skip: int) -> Iterable:
        """Epoch ``epoch``'s training batches, after the first ``skip`` of them."""

    def loss(self, net: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's loss through ``net`` (DDP-wrapped under Ray) and sums to add up:
        ``n`` (its weight) and ``loss`` (its loss times ``n``), and any of the task's own."""

    def summary(self, sums: dict[str, float], seconds: float) -> dict:
        """An epoch's training figures from its sums."""

    def evaluate(self, rank: int) -> dict:
        """Validation figures of ``self.model`` (every rank calls it; collectives allowed)."""

    def saved(self) -> dict:
        """What ``model.pt`` keeps beside ``state_dict``, ``config`` and ``history``."""


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    batches_per_epoch: list[int] = field(default_factory=list)


def fit(task: Task, log: Callable[[dict], None] = print,
        on_batch: Callable[[int, int, int, float], None] | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m, rank: int = 0) -> FitResult:
    """Train ``task`` for its schedule's epochs; ``log`` gets one record per epoch (and one
    ``{"resumed", "epoch", "batch"}`` first when a run goes on from ``last.pt``).

    ``on_batch(epoch, batch, batches_per_epoch, loss)`` follows every step (progress bars);
    ``wrap_model`` makes the module that trains (DDP under Ray Train).
    """
    sched, run, model = task.schedule, task.run, task.model
    net = wrap_model(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=sched.lr, momentum=0.9,
                          weight_decay=sched.weight_decay)
    total = sched.epochs * task.steps_per_epoch
    out = Path(run.out) if run.out and rank == 0 else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if run.checkpoint_every and not task.mid_epoch:
        raise ConfigError("--checkpoint-every needs an input that resumes mid-epoch (latent shards); "
                          "this one saves last.pt at each epoch's end")
    result = FitResult(model)
    step, start, skip, sums = 0, 0, 0, {}
    last = _load_last(task)
    if last is not None:
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        torch.set_rng_state(last["torch_rng"])
        step, start, skip, sums = last["step"], last["epoch"], last["batch"], last["sums"]
        result.history = last["history"]
        log({"resumed": str(Path(run.out) / "last.pt"), "epoch": start, "batch": skip})
    for epoch in range(start, sched.epochs):
        if skip and not task.mid_epoch:
            raise ConfigError("this input cannot resume mid-epoch; resume from an epoch's end")
        batches = task.batches(epoch, skip)
        net.train()
        done, t0 = skip, time.perf_counter()
        sums = sums if skip else {}
        skip = 0
        for batch in batches:
            done += 1
            for g in opt.param_groups:
                g["lr"] = sched.lr_at(step, total)
            loss, add = task.loss(net, batch)
            if _diverged(loss):  # stop now: last.pt still holds the last good epoch
                raise TrainError(f"the training loss became {loss.item()} at epoch {epoch}, batch {done}: "
                                 f"the run diverged; lower --lr (it is {sched.lr}), train into a new --out")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            for k, v in add.items():
                sums[k] = sums.get(k, 0) + v
            if out and run.checkpoint_every and step % run.checkpoint_every == 0:
                _save_last(out, task, opt, step, epoch, done, sums, result.history)
            if on_batch:
                on_batch(epoch, done, task.steps_per_epoch, loss.item())
        result.batches_per_epoch.append(done)
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, **task.summary(sums, seconds), "seconds": seconds, "batches": done,
               "rank": rank}
        if not (epoch + 1) % run.eval_every or epoch + 1 == sched.epochs:
            rec.update(task.evaluate(rank))
        # training wall clock so far (evaluation excluded), for comparisons at equal time
        rec["elapsed"] = (result.history[-1].get("elapsed", 0.0) if result.history else 0.0) + seconds
        result.history.append(rec)
        log(rec)
        if out:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            _save_last(out, task, opt, step, epoch + 1, 0, {}, result.history)
    if out:
        torch.save({**task.saved(), "state_dict": model.state_dict(), "config": task.config,
                    "history": result.history}, out / "model.pt")
    return result


def _diverged(loss: torch.Tensor) -> bool:
    """Whether the loss is not finite on this rank or, under torch.distributed, on any rank
    (all ranks stop together instead of one waiting in the next all-reduce)."""
    bad = ~torch.isfinite(loss.detach())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = bad.to(torch.float32).reshape(1)
        torch.distributed.all_reduce(flag)
        return bool(flag.item())
    return bool(bad)


def seed_epoch(generator: torch.Generator, seed: int, epoch: int) -> None:
    """Seed a DataLoader's own generator for ``epoch``: its draws (shuffle, worker seeds) are
    then a function of (seed, epoch) alone, and leave torch's global stream, which last.pt
    saves, to the model (Faster R-CNN samples proposals from it)."""
    generator.manual_seed(seed * 1_000_003 + epoch)


def jsonable(obj: Any) -> Any:
    """A config as JSON would hold it (tuples become lists), so a saved one compares equal."""
    return json.loads(json.dumps(obj, default=list))


def _save_last(out: Path, task: Task, opt, step: int, epoch: int, batch: int, sums: dict,
               history: list) -> None:
    """``out/last.pt``: everything a run needs to go on from the next sample, written whole."""
    tmp = out / f".last.pt.{os.getpid()}.tmp"
    torch.save({"step": step, "epoch": epoch, "batch": batch, "sums": dict(sums), "history": history,
                "model": task.model.state_dict(), "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(), "config": task.config}, tmp)
    os.replace(tmp, out / "last.pt")


def _load_last(task: Task) -> dict | None:
    """The run's ``last.pt`` when ``--resume`` asks for it and it is there; a run saved with
    other options is refused, naming them."""
    run = task.run
    path = Path(run.out or "") / "last.pt"
    if not (run.resume and run.out and path.is_file()):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    then = state["config"]
    diff = [k for k in task.resume_keys if task.config.get(k) != then.get(k)]
    if diff:
        raise ConfigError(f"{path} was saved by a run with other {', '.join(diff)}; resume with the same "
                          "options, or train into another --out")
    return state
