"""Training a codec on the bundled photos: rate–distortion, or rate–distortion–utility.

Loss (Ballé et al.; CompressAI's convention): ``L = λ·255²·MSE(x, x̂) + bpp`` with the
entropy bottleneck's auxiliary quantile loss minimised by its own optimizer. With a task
(``utility="classify"`` and a labelled ``task_source``), the seed paper's Eq. 6 adds
``λ_t·L_task`` of a head on ŷ, from its own batch (`pipeline.codec_train.utility`).
"""

from __future__ import annotations

import copy
import json
import math
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.codec import checkpoint
from pipeline.codec.registry import get_architecture
from pipeline.codec_train.crops import CropSampler, labelled_images, read_rgb
from pipeline.codec_train.utility import ClassifyHead, rdu_loss
from pipeline.errors import ConfigError
from pipeline.tasks.photos import bundled_photos


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
    widen_from: str | None = None  # a narrower scale hyperprior, widened to N without changing its function
    command: str = ""
    extra_metadata: dict = field(default_factory=dict)
    source: str | None = None  # train on crops of any source the converter reads (its train split)
    workers: int = 2  # DataLoader workers decoding and cropping the source's images
    photos: str | None = None  # a photo set from `make photos`: its train/ photos join the bundled ones
    max_side: int = 2048  # in-memory training photos are downscaled (antialiased) to this longer side
    synthetic: int = 0  # add this many dead-leaves images (768 px, coloured from the photos)
    resume: bool = False  # go on from OUT.state at the exact next step (model, optimisers, RNG, crops)
    heldout: str | None = None  # a folder of held-out images: PSNR / bpp logged every heldout_every steps
    heldout_every: int = 0
    max_minutes: float = 0  # > 0: stop (OUT and OUT.state written) after this wall clock; --resume goes on
    # rate–distortion–utility (Eq. 6): a task head on ŷ, trained jointly from its own batches
    utility: str | None = None  # "classify"
    task_source: str | None = None  # labelled images: a class-per-folder tree (its train/ split)
    lmbda_t: float = 10.0
    task_batch_size: int = 16
    task_patch: int = 64  # task crops (ŷ of 64 px is 4×4)
    task_arch: str = "sresnet18"
    task_quantise: str = "noise"  # or "ste": straight-through rounding
    task_workers: int = 0  # > 0: task crops streamed by this many DataLoader workers (any corpus
    # size); 0: the task tree's train images held in memory (small trees; what the shipped run used)

    def __post_init__(self):
        for name, v in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--patch", self.patch),
                        ("-N", self.N), ("-M", self.M)):
            if v <= 0:
                raise ConfigError(f"{name} must be positive, got {v}")
        if self.patch % 64:
            raise ConfigError(f"--patch must be a multiple of 64 (the codec's stride), got {self.patch}")
        if self.lmbda <= 0 or self.lr <= 0:
            raise ConfigError(f"--lmbda and --lr must be positive, got {self.lmbda} and {self.lr}")
        if self.utility not in (None, "classify", "detect"):
            raise ConfigError(f"--utility is classify or detect, not {self.utility!r}")
        if self.utility and not self.task_source:
            raise ConfigError(f"--utility {self.utility} needs --task-source: a labelled class-per-folder "
                              "tree (classify) or a detection source, voc or coco (detect)")
        if self.heldout_every % 50:
            raise ConfigError("--heldout-every is a multiple of 50 (the log interval), "
                              f"not {self.heldout_every}")
        if self.widen_from and (self.arch != "slim-hyperprior" or self.init_from):
            raise ConfigError("--widen-from makes a slim-hyperprior (--codec-arch slim-hyperprior) and "
                              "replaces --init-from")
        if self.source and self.photos:
            raise ConfigError("--source streams its own images; --photos adds photos to the bundled ones: "
                              "give one of them")
        if self.utility and (self.lmbda_t < 0 or self.task_batch_size <= 0 or self.task_patch % 64):
            raise ConfigError("--lmbda-t must be >= 0, --task-batch-size positive and --task-patch a "
                              "multiple of 64")


def cli_command(cfg: CodecTrainConfig) -> str:
    """The `latents train-codec` line that reproduces this configuration."""
    from pipeline.errors import redact

    return (f"latents train-codec {cfg.out} --codec-arch {cfg.arch} --N {cfg.N} --M {cfg.M} "
            f"--lmbda {cfg.lmbda} --steps {cfg.steps} --batch-size {cfg.batch_size} "
            f"--patch {cfg.patch} --lr {cfg.lr} --seed {cfg.seed} --threads {cfg.threads}"
            + (f" --init-from {redact(cfg.init_from)}" if cfg.init_from else "")
            + (f" --widen-from {redact(cfg.widen_from)}" if cfg.widen_from else "")
            + (f" --source {redact(cfg.source)} --workers {cfg.workers}" if cfg.source else "")
            + (f" --photos {cfg.photos} --max-side {cfg.max_side}" if cfg.photos else "")
            + (f" --synthetic {cfg.synthetic}" if cfg.synthetic else "")
            + (f" --scales {','.join(map(str, cfg.scales))}" if cfg.scales != (1.0, 0.75, 0.5) else "")
            + (f" --utility {cfg.utility} --task-source {redact(cfg.task_source)} --lmbda-t {cfg.lmbda_t} "
               f"--task-batch-size {cfg.task_batch_size} --task-patch {cfg.task_patch} "
               f"--task-arch {cfg.task_arch} --task-quantise {cfg.task_quantise}"
               + (f" --task-workers {cfg.task_workers}" if cfg.task_workers else "") if cfg.utility else ""))


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
        raise ConfigError(f"{url} shares no learned tensor of matching name and shape with this model")
    model.load_state_dict({**own, **{k: src[k].to(own[k].dtype) for k in taken}})
    return taken


def _split_params(model: torch.nn.Module):
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return main, aux


def _snapshot(model, cfg: CodecTrainConfig, step: int, log: dict, photos, head=None) -> checkpoint.Checkpoint:
    from pipeline.errors import redact

    utility = None if head is None else {
        "task": head.name, "lmbda_d": cfg.lmbda, "lmbda_t": cfg.lmbda_t, "classes": list(head.classes),
        "head": head.arch, "quantise": cfg.task_quantise, "task_source": redact(cfg.task_source),
        "task_batch_size": cfg.task_batch_size, "reconstruction_batch_size": cfg.batch_size,
        "head_weights": Path(str(cfg.out) + ".head.pt").name}
    meta = {
        "trained_by": "latents train-codec",
        "command": cfg.command or cli_command(cfg),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("extra_metadata",)},
        "step": step,
        "last_log": log,
        **({"train_source": redact(cfg.source)} if cfg.source else {
            "train_photos": [p.name for p in photos if not p.holdout],
            "holdout_photos": [p.name for p in photos if p.holdout]}),
        **({"utility": utility} if utility else {}),
        **cfg.extra_metadata,
    }
    return checkpoint.finalize(copy.deepcopy(model).cpu(), cfg.arch, lmbda=cfg.lmbda, metadata=meta,
                               half=True)


def _average_grads(params: list, world: int) -> None:
    """Data parallelism by hand: every rank ends the step with the mean of all ranks' gradients
    (simpler than a DDP wrapper around a model whose auxiliary loss has its own backward)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


#: options a resumed run may change (the rest must match the run that saved OUT.state)
_FREE_ON_RESUME = ("steps", "resume", "threads", "workers", "save_every", "heldout", "heldout_every",
                   "max_minutes", "command", "extra_metadata")


def _resume_state(cfg: CodecTrainConfig) -> dict | None:
    """OUT.state when ``--resume`` asks for it; a fresh run refuses to overwrite one."""
    path = Path(str(cfg.out) + ".state")
    if not path.exists():
        return None
    if not cfg.resume:
        raise ConfigError(f"{path} holds an unfinished run: pass --resume to go on from it, or train into "
                          "another OUT")
    st = torch.load(path, map_location="cpu", weights_only=False)
    then = st.get("config")
    if then is not None:
        now = _jsonable(cfg)
        diff = sorted(k for k in now if k not in _FREE_ON_RESUME and now[k] != then.get(k))
        if diff:
            raise ConfigError(f"{path} was saved by a run with other {', '.join(diff)}; resume with the same "
                              "options (--steps may grow), or train into another OUT")
    return st


def _jsonable(cfg: CodecTrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=list))


def training_images(cfg: CodecTrainConfig, photos) -> tuple[list[torch.Tensor], dict]:
    """The in-memory training photos (the bundled ones not held out, and a `make photos` set's
    train/ files), each at most ``max_side`` long, and the data manifest that lists them."""
    from pipeline.tasks.wallpapers import training_files

    images = [read_rgb(str(p.path), cfg.max_side) for p in photos if not p.holdout]
    data = {"bundled": [{"name": p.name, "package": p.package} for p in photos if not p.holdout],
            "bundled_holdout": [p.name for p in photos if p.holdout]}
    if cfg.photos:
        rows = training_files(Path(cfg.photos))
        images += [read_rgb(str(Path(cfg.photos) / r["file"]), cfg.max_side) for r in rows]
        data["photos"] = rows
    if cfg.synthetic:
        from pipeline.codec_train.synthetic import dead_leaves_set

        images += dead_leaves_set(cfg.synthetic, 768, cfg.seed, images)
        data["synthetic"] = {"model": "dead-leaves, r^-3 radii, colours from the photos",
                             "images": cfg.synthetic, "size": 768, "seed": cfg.seed}
    return images, data


@torch.no_grad()
def heldout_figures(model: torch.nn.Module, images: list[torch.Tensor]) -> dict:
    """Mean PSNR and bpp (from the likelihoods, not a bitstream) of the model on whole images."""
    model.eval()
    psnrs, bpps = [], []
    for img in images:
        h, w = img.shape[1:]
        x = F.pad(img[None], (0, -w % 64, 0, -h % 64), mode="replicate")
        out = model(x)
        rec = out["x_hat"][..., :h, :w].clamp(0, 1)
        psnrs.append(-10 * math.log10(max(F.mse_loss(rec, img[None]).item(), 1e-12)))
        bits = sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values())
        bpps.append(bits / (h * w))
    model.train()
    return {"heldout_psnr": float(np.mean(psnrs)), "heldout_bpp": float(np.mean(bpps))}


def train_codec(cfg: CodecTrainConfig, on_log: Callable[[dict], None] = print, rank: int = 0,
                world: int = 1, device: torch.device | str = "cpu",
                on_step: Callable[[int], None] | None = None) -> checkpoint.Checkpoint | None:
    """Train, saving a finalized half-precision checkpoint every ``save_every`` steps, with
    ``OUT.state`` (what ``--resume`` goes on from, exactly: model, optimisers, torch's RNG and
    the crop sampler's) and ``OUT.data.json`` (every training file, with its package).

    With ``world`` > 1 (ranks of a torch.distributed group, e.g. Ray Train workers) each rank
    draws its own crops and the gradients are averaged every step; rank 0 alone logs, builds
    the CDF tables and writes the checkpoint (the others return None). ``on_step(step)``
    follows every step (progress). A streamed ``--source`` resumes with fresh crops.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    photos = bundled_photos()
    st = _resume_state(cfg)
    if cfg.source:  # crops streamed from the source by DataLoader workers
        from pipeline.codec_train.crops import crop_batches
        from pipeline.errors import redact

        stream = crop_batches(cfg.source, cfg.patch, cfg.batch_size, cfg.workers, cfg.scales, cfg.seed + rank)
        sampler = types.SimpleNamespace(batch=lambda n: next(stream), rng=None)
        data = {"source": redact(cfg.source)}
    else:
        train_imgs, data = training_images(cfg, photos)
        sampler = CropSampler(train_imgs, cfg.patch, cfg.scales, cfg.seed + rank)
    heldout = ([read_rgb(str(f)) for f in sorted(Path(cfg.heldout).iterdir()) if f.is_file()]
               if cfg.heldout and cfg.heldout_every else [])
    model = get_architecture(cfg.arch).build(cfg.N, cfg.M).train()  # the same weights on every rank
    if cfg.init_from:
        warm_start(model, cfg.init_from)
    if cfg.widen_from:
        from pipeline.codec_train.widen import widen

        narrow = checkpoint.build_model(checkpoint.read(cfg.widen_from))
        if int(narrow.M) != cfg.M:
            raise ConfigError(f"{cfg.widen_from} has M={narrow.M}; widening keeps M: give --M {narrow.M}")
        model = widen(narrow, cfg.N, seed=cfg.seed).train()
    model.to(device)
    main_params, aux_params = _split_params(model)
    head, task_crops = None, None
    if cfg.utility == "detect":
        from pipeline.codec_train.crops import DetectionCrops
        from pipeline.codec_train.utility import DetectHead

        task_crops = DetectionCrops(cfg.task_source, cfg.task_patch // 16, cfg.seed + rank + 1)
        arch = cfg.task_arch if cfg.task_arch.startswith("fasterrcnn-") else f"fasterrcnn-{cfg.task_arch}"
        head = DetectHead(cfg.M, task_crops.classes, arch, window_px=cfg.task_patch).train().to(device)
        main_params = main_params + list(head.parameters())
    elif cfg.utility:
        if cfg.task_workers:
            from pipeline.codec_train.crops import labelled_batches

            classes, labelled = labelled_batches(cfg.task_source, cfg.task_patch, cfg.task_batch_size,
                                                 cfg.task_workers, cfg.seed + rank + 1)
            task_crops = types.SimpleNamespace(classes=classes, batch=lambda n: next(labelled), rng=None)
        else:
            classes, images, labels = labelled_images(cfg.task_source)
            task_crops = CropSampler(images, cfg.task_patch, (1.0,), cfg.seed + rank + 1, labels, classes)
        head = ClassifyHead(cfg.M, task_crops.classes, cfg.task_arch).train().to(device)
        main_params = main_params + list(head.parameters())
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    state_path = Path(str(cfg.out) + ".state")
    start = 0
    t0, acc = time.time(), []
    log: dict = {}
    if st is not None:  # resume an interrupted run
        model.load_state_dict(st["model"], strict=False)
        if head is not None:
            head.load_state_dict(st["head"])
            if task_crops.rng is not None:  # streamed task crops start afresh, like --source's
                task_crops.rng = st["task_rng"]
        opt.load_state_dict(st["opt"])
        aux_opt.load_state_dict(st["aux_opt"])
        if not cfg.source:  # a streamed source starts its crops afresh on resume
            sampler.rng = st["rng"]
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        start, acc, log = st["step"], list(st.get("acc", [])), dict(st.get("log", {}))
    if rank == 0:
        Path(str(cfg.out) + ".data.json").write_text(json.dumps(data, indent=1) + "\n")
    log_path = Path(str(cfg.out) + ".log.jsonl")
    if cfg.max_minutes and world > 1:
        raise ConfigError("--max-minutes stops one process; on Ray Train workers give --steps")
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
    for step in range(start + 1, cfg.steps + 1):
        if step == int(cfg.lr_drop_at * cfg.steps):
            for g in opt.param_groups:
                g["lr"] = cfg.lr / 10
        x = sampler.batch(cfg.batch_size).to(device)
        opt.zero_grad(set_to_none=True)
        aux_opt.zero_grad(set_to_none=True)
        tasks = []
        if head is not None:
            xt, labels = task_crops.batch(cfg.task_batch_size)
            # detection targets are dicts, moved by the head
            labels = labels.to(device) if torch.is_tensor(labels) else labels
            tasks = [(head, cfg.lmbda_t, xt.to(device), labels)]
        terms = rdu_loss(model, x, cfg.lmbda, tasks, cfg.task_quantise)
        loss, bpp, mse = terms.loss, terms.bpp, terms.mse
        loss.backward()
        if world > 1:
            _average_grads(main_params, world)
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        opt.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        if world > 1:
            _average_grads(aux_params, world)
        aux_opt.step()
        acc.append((loss.item(), bpp.item(), mse.item(), aux_loss.item(), terms.task.item()))
        if rank == 0 and (step % 50 == 0 or step == cfg.steps):
            a = np.mean(acc, axis=0)
            log = {"step": step, "loss": float(a[0]), "bpp": float(a[1]), "psnr": -10 * math.log10(a[2]),
                   "aux": float(a[3]), "s_per_step": (time.time() - t0) / len(acc)}
            if head is not None:
                log["task"] = float(a[4])  # λ_t · task loss
            if heldout and (step % cfg.heldout_every == 0 or step == cfg.steps):
                log.update(heldout_figures(model, heldout))
            acc, t0 = [], time.time()
            on_log(log)
            with open(log_path, "a") as f:
                f.write(json.dumps(log) + "\n")
        out_of_time = deadline is not None and time.monotonic() > deadline
        if rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps or out_of_time):
            checkpoint.save(_snapshot(model, cfg, step, log, photos, head), str(cfg.out))
            extra = {}
            if head is not None:
                torch.save({"arch": head.arch, "classes": list(head.classes),
                            "state_dict": head.state_dict()}, str(cfg.out) + ".head.pt")
                extra = {"head": head.state_dict(), "task_rng": task_crops.rng}
            tmp = state_path.with_name(state_path.name + ".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "aux_opt": aux_opt.state_dict(), "rng": sampler.rng, "step": step,
                        "torch_rng": torch.get_rng_state(), "acc": acc, "log": log,
                        "config": _jsonable(cfg), **extra}, tmp)
            tmp.replace(state_path)  # whole or not at all: a kill while saving keeps the last state
        if on_step:
            on_step(step)
        if out_of_time:  # OUT and OUT.state hold this step: --resume goes on from the next
            return _snapshot(model, cfg, step, log, photos, head)
    return _snapshot(model, cfg, cfg.steps, log, photos, head) if rank == 0 else None
