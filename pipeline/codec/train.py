"""Rate–distortion training of a codec on the bundled photos (or any folder of images).

Loss (Ballé et al.; CompressAI's convention): ``L = λ·255²·MSE(x, x̂) + bpp`` with the
entropy bottleneck's auxiliary quantile loss minimised by its own optimizer.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.codec import checkpoint
from pipeline.codec.registry import get_architecture
from pipeline.errors import ConfigError
from pipeline.photos import bundled_photos


@dataclass(frozen=True)
class CodecTrainConfig:
    out: str
    arch: str = "mbt2018-mean"
    N: int = 64
    M: int = 96
    lmbda: float = 0.013
    steps: int = 15300
    batch_size: int = 8
    patch: int = 128
    lr: float = 3e-4
    lr_drop_at: float = 0.85  # fraction of steps after which lr is divided by 10
    aux_lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    threads: int = 0  # 0 = torch default
    save_every: int = 250
    scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    init_from: str | None = None  # checkpoint whose same-named, same-shaped tensors start the run
    command: str = ""
    extra_metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, v in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--patch", self.patch),
                        ("-N", self.N), ("-M", self.M)):
            if v <= 0:
                raise ConfigError(f"{name} must be positive, got {v}")
        if self.patch % 64:
            raise ConfigError(f"--patch must be a multiple of 64 (the codec's stride), got {self.patch}")
        if self.lmbda <= 0 or self.lr <= 0:
            raise ConfigError(f"--lmbda and --lr must be positive, got {self.lmbda} and {self.lr}")


def cli_command(cfg: CodecTrainConfig) -> str:
    """The `latents train-codec` line that reproduces this configuration."""
    return (f"latents train-codec {cfg.out} --arch {cfg.arch} --N {cfg.N} --M {cfg.M} "
            f"--lmbda {cfg.lmbda} --steps {cfg.steps} --batch-size {cfg.batch_size} "
            f"--patch {cfg.patch} --lr {cfg.lr} --seed {cfg.seed} --threads {cfg.threads}"
            + (f" --init-from {cfg.init_from}" if cfg.init_from else ""))


def warm_start(model: torch.nn.Module, url: str) -> list[str]:
    """Copy every learned tensor of checkpoint ``url`` whose name and shape match into ``model``.

    A scale-only hyperprior started from a mean-scale one takes g_a, g_s, h_a and the
    z entropy bottleneck (same shapes) and learns its own h_s. CDF tables are not copied:
    they are rebuilt from the trained model when it is finalized. Returns the copied names.
    """
    src = checkpoint.read(url).state_dict
    own = model.state_dict()
    taken = [k for k, v in src.items()
             if k in own and own[k].shape == v.shape and k.rsplit(".", 1)[-1] not in checkpoint.CDF_BUFFERS]
    params = {n for n, _ in model.named_parameters()}
    if not params.intersection(taken):
        raise ValueError(f"{url} shares no learned tensor of matching name and shape with this model")
    model.load_state_dict({**own, **{k: src[k].to(own[k].dtype) for k in taken}})
    return taken


def _load_rgb(path: Path) -> torch.Tensor:
    im = Image.open(path)
    im = im.convert("RGB")
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255)


class PatchSampler:
    """Random crops (random scale, position, horizontal flip) from a list of images."""

    def __init__(self, images: list[torch.Tensor], patch: int, scales, seed: int):
        self.patch = patch
        self.levels = []
        for img in images:
            for s in scales:
                h, w = round(img.shape[1] * s), round(img.shape[2] * s)
                if min(h, w) < patch:
                    continue
                lvl = img if s == 1.0 else F.interpolate(
                    img[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False
                )[0].clamp_(0, 1)
                self.levels.append(lvl)
        if not self.levels:
            raise ValueError(f"no training image is at least {patch}px on its shorter side")
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = torch.empty(n, 3, self.patch, self.patch)
        for i in range(n):
            img = self.levels[self.rng.integers(len(self.levels))]
            y = self.rng.integers(img.shape[1] - self.patch + 1)
            x = self.rng.integers(img.shape[2] - self.patch + 1)
            crop = img[:, y : y + self.patch, x : x + self.patch]
            out[i] = crop.flip(-1) if self.rng.random() < 0.5 else crop
        return out


def rd_loss(out: dict, x: torch.Tensor, lmbda: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    bpp = sum(torch.log(v).sum() for v in out["likelihoods"].values()) / (-math.log(2) * n * h * w)
    mse = F.mse_loss(out["x_hat"], x)
    return lmbda * 255**2 * mse + bpp, bpp, mse


def _split_params(model: torch.nn.Module):
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return main, aux


def _snapshot(model, cfg: CodecTrainConfig, step: int, log: dict, photos) -> checkpoint.Checkpoint:
    meta = {
        "trained_by": "latents train-codec",
        "command": cfg.command or cli_command(cfg),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("extra_metadata",)},
        "step": step,
        "last_log": log,
        "train_photos": [p.name for p in photos if not p.holdout],
        "holdout_photos": [p.name for p in photos if p.holdout],
        **cfg.extra_metadata,
    }
    return checkpoint.finalize(copy.deepcopy(model), cfg.arch, lmbda=cfg.lmbda, metadata=meta, half=True)


def train_codec(cfg: CodecTrainConfig, on_log: Callable[[dict], None] = print) -> checkpoint.Checkpoint:
    """Train, saving a finalized half-precision checkpoint every ``save_every`` steps."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    photos = bundled_photos()
    train_imgs = [_load_rgb(p.path) for p in photos if not p.holdout]
    sampler = PatchSampler(train_imgs, cfg.patch, cfg.scales, cfg.seed)
    model = get_architecture(cfg.arch).build(cfg.N, cfg.M).train()
    if cfg.init_from:
        warm_start(model, cfg.init_from)
    main_params, aux_params = _split_params(model)
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    state_path = Path(str(cfg.out) + ".state")
    start = 0
    if state_path.exists():  # resume an interrupted run
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"], strict=False)
        opt.load_state_dict(st["opt"])
        aux_opt.load_state_dict(st["aux_opt"])
        sampler.rng = st["rng"]
        start = st["step"]
    log_path = Path(str(cfg.out) + ".log.jsonl")
    t0, acc = time.time(), []
    log: dict = {}
    for step in range(start + 1, cfg.steps + 1):
        if step == int(cfg.lr_drop_at * cfg.steps):
            for g in opt.param_groups:
                g["lr"] = cfg.lr / 10
        x = sampler.batch(cfg.batch_size)
        opt.zero_grad(set_to_none=True)
        aux_opt.zero_grad(set_to_none=True)
        loss, bpp, mse = rd_loss(model(x), x, cfg.lmbda)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        opt.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_opt.step()
        acc.append((loss.item(), bpp.item(), mse.item(), aux_loss.item()))
        if step % 50 == 0 or step == cfg.steps:
            a = np.mean(acc, axis=0)
            log = {"step": step, "loss": float(a[0]), "bpp": float(a[1]), "psnr": -10 * math.log10(a[2]),
                   "aux": float(a[3]), "s_per_step": (time.time() - t0) / len(acc)}
            acc, t0 = [], time.time()
            on_log(log)
            with open(log_path, "a") as f:
                f.write(json.dumps(log) + "\n")
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint.save(_snapshot(model, cfg, step, log, photos), str(cfg.out))
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "aux_opt": aux_opt.state_dict(), "rng": sampler.rng, "step": step},
                       state_path)
    return _snapshot(model, cfg, cfg.steps, log, photos)
