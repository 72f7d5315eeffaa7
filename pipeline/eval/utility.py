"""`latents eval utility`: what a codec's latents are worth to a downstream classifier, per bit.

The shape of the seed paper's Table 1 on any labelled source (a tree with ``train/`` and
``val/`` class folders, e.g. `latents make-task`). For each codec checkpoint (a rate point):

- its ŷ: the source converted with that codec, an sResNet trained on ŷ;
- JPEG at the matched rate (at the rates of one codec, by default the first named, as the
  seed's Table 1 has one JPEG row per rate): every image re-encoded with the JPEG quality
  whose bpp comes closest to that codec's bpp on that image, a pixel ResNet trained on them;

and once, the ceiling: the same pixel ResNet on the original images. Every classifier gets
the same epochs, batch size and learning rate, over several seeds (mean ± std of val top-1
and top-5). Each run keeps its folder under ``work`` and resumes: an interrupted eval goes on
where it stopped, and a finished run is read back, not trained again. The same runs are
also compared at equal training time (`pipeline.eval.budget`): every row's top-1 when the
quickest row had finished training. Also measured: one
training step of sResNet-18 and cResNet-18 on ŷ against ResNet-18 on 224-px pixels, and
their forward FLOPs (the seed's efficiency claim).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.codec.load import CodecSpec
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import ConfigError, SourceError
from pipeline.eval.budget import equal_time
from pipeline.images import ImagePolicy
from pipeline.shards.index import bits_per_pixel
from pipeline.train.classify import TrainConfig, train_classifier
from pipeline.train.data import Augment, InputSpec

JPEG_QUALITIES = tuple(range(1, 96))


@dataclass(frozen=True)
class UtilityConfig:
    source: str  # labelled tree with train/ and val/ class folders
    codecs: dict[str, list[str]]  # method name → checkpoints (one rate point each)
    work: str  # folder for the converted datasets, JPEG copies and classifier runs
    seeds: int = 3
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    window: int = 6  # latent crop side; pixels use 16x this
    latent_arch: str = "sresnet18"
    pixel_arch: str = "resnet18"
    workers: int = 2
    cost_batch: int = 32  # batch of the per-step training cost comparison
    jpeg_match: str | None = None  # codec name JPEG is matched to at each of its rates (None: the
    # first; "all": every codec)
    augment: Augment = Augment()  # one geometric policy for every arm

    def __post_init__(self):
        if self.seeds < 1 or self.epochs < 1:
            raise ConfigError(f"--seeds and --epochs must be at least 1, got {self.seeds} and "
                              f"{self.epochs}")
        if not self.codecs or any(not v for v in self.codecs.values()):
            raise ConfigError("name at least one codec checkpoint (--codec NAME=CHECKPOINT)")
        if self.jpeg_match not in (None, "all", *self.codecs):
            raise ConfigError(f"--jpeg-match names a codec ({', '.join(self.codecs)}) or 'all', "
                              f"not {self.jpeg_match!r}")


@dataclass
class UtilityRow:
    method: str  # e.g. "rd ŷ", "task ŷ", "JPEG pixels", "original pixels"
    checkpoint: str | None
    bpp: float | None
    top1: list[float] = field(default_factory=list)  # one per seed
    top5: list[float] = field(default_factory=list)
    target_bpp: float | None = None  # JPEG rows: the codec rate they match (JPEG may not reach it)
    seconds: list[float] = field(default_factory=list)  # training wall clock per seed
    curves: list[list[tuple[float, float]]] = field(default_factory=list)  # (seconds, val top-1) per epoch

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("top1", "top5", "seconds"):
            d[f"{k}_mean"], d[f"{k}_std"] = float(np.mean(self.__dict__[k])), float(np.std(self.__dict__[k]))
        return d


def _images(source: Path, split: str) -> list[tuple[Path, str]]:
    root = source / split
    if not root.is_dir():
        raise SourceError(f"{source} has no {split}/ folder: `eval utility` needs train/ and val/ "
                          "class folders")
    out = [(p, d.name) for d in sorted(root.iterdir()) if d.is_dir() for p in sorted(d.iterdir())
           if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp")]
    if not out:
        raise SourceError(f"{root} holds no images in class folders")
    return out


def jpeg_at_bpp(img: Image.Image, bpp: float) -> tuple[bytes, float]:
    """The JPEG of ``img`` whose bpp is closest to ``bpp`` (a binary search over quality), with
    optimised Huffman tables, and one channel where the image is grey: the smallest JPEG
    Pillow makes at each quality, so JPEG reaches as low a rate as it can."""
    w, h = img.size
    a = np.asarray(img)
    if img.mode == "RGB" and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        img = img.convert("L")

    def enc(q: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q, optimize=True)
        return buf.getvalue()

    lo, hi = 0, len(JPEG_QUALITIES) - 1
    best = enc(JPEG_QUALITIES[lo])
    while lo <= hi:
        mid = (lo + hi) // 2
        data = enc(JPEG_QUALITIES[mid])
        if abs(bits_per_pixel(len(data), w * h) - bpp) < abs(bits_per_pixel(len(best), w * h) - bpp):
            best = data
        if bits_per_pixel(len(data), w * h) < bpp:
            lo = mid + 1
        else:
            hi = mid - 1
    return best, bits_per_pixel(len(best), w * h)


def write_jpeg_copy(source: Path, out: Path, bpp: float) -> float:
    """train/ and val/ re-encoded as JPEG at ``bpp`` (per image); returns the mean bpp reached."""
    reached = []
    for split in ("train", "val"):
        for path, cls in _images(source, split):
            img = Image.open(path).convert("RGB")
            data, b = jpeg_at_bpp(img, bpp)
            dst = out / split / cls / f"{path.stem}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            reached.append(b)
    return float(np.mean(reached))


def convert_arm(source: str, out: str, checkpoint: str, policy: ImagePolicy, shard_size: int) -> float:
    """``source`` converted (or its conversion resumed) into ``out`` with ``checkpoint``: the
    dataset's mean bpp; an error naming the failures table when no image converted."""
    m = convert_dataset(ConvertJob(source, out, codec=CodecSpec(checkpoint=checkpoint),
                                   options=ConvertOptions(policy, shard_size=shard_size)))
    bpp = m.manifest.totals.mean_bpp
    if bpp is None:
        raise SourceError(f"{source}: no image converted with {checkpoint}; see {out}/failures.parquet")
    return bpp


def _train(cfg: UtilityConfig, spec: InputSpec, arch: str, out: Path, seed: int) -> list[dict]:
    tc = TrainConfig(replace(spec, seed=seed), arch=arch, epochs=cfg.epochs, lr=cfg.lr, out=str(out),
                     seed=seed, resume=True)  # an interrupted eval goes on; a finished run is read back
    return train_classifier(tc, log=lambda rec: None)["history"]


#: The per-step cost comparison: (name, model, input) for a 224-px image and its 14×14 ŷ.
COST_MODELS = (("ResNet-18", "resnet18", "224-px pixels"), ("sResNet-18", "sresnet18", "14×14 ŷ"),
               ("cResNet-18", "cresnet18", "14×14 ŷ"))


def _stem(model: torch.nn.Module) -> torch.nn.Module:
    """What a model runs before its ResNet stages: the pixel stem, or the ŷ entry."""
    if hasattr(model, "entry"):
        return model.entry
    return torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)


def step_cost(batch: int = 32, reps: int = 3, latent_channels: int = 96) -> dict:
    """One SGD step (forward, backward, update) of each of `COST_MODELS` on this machine's
    CPU, in milliseconds, and its forward GFLOPs per image, split into the stem (pixel stem or
    ŷ entry) and the rest. sResNet's stem ends where ResNet's does (64 channels at 56×56), so
    the two share every stage after it: only the stems can make their costs differ."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.models.registry import MODELS, create_model

    def time_step(model, x) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        y = torch.zeros(x.shape[0], dtype=torch.long)
        times = []
        for _ in range(reps + 1):
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        return 1e3 * float(np.median(times[1:]))

    def gflops(module, x) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            module(x)
        return fc.get_total_flops() / 1e9

    rows = []
    for name, arch, what in COST_MODELS:
        torch.manual_seed(0)
        latent = MODELS[arch].input == "latent"
        model = create_model(arch, latent_channels if latent else 3, 1000)
        shape = (latent_channels, 14, 14) if latent else (3, 224, 224)
        one = torch.randn(1, *shape)
        model.eval()
        total, stem = gflops(model, one), gflops(_stem(model), one)
        model.train()
        rows.append({"model": name, "arch": arch, "input": what, "gflops": total, "stem_gflops": stem,
                     "ms": time_step(model, torch.randn(batch, *shape))})
    return {"batch": batch, "rows": rows}


def evaluate_utility(cfg: UtilityConfig, on_row=lambda row: None) -> dict:
    """Every row of the table (see the module docstring); ``on_row`` sees each as it finishes."""
    source, work = Path(cfg.source), Path(cfg.work)
    _images(source, "train"), _images(source, "val")  # both splits present, or a clear error
    pixel = InputSpec(str(source), kind="pixels", window=(cfg.window, cfg.window),
                      batch_size=cfg.batch_size, workers=cfg.workers, augment=cfg.augment)
    rows = []

    def run(row: UtilityRow, spec: InputSpec, arch: str, tag: str) -> None:
        for seed in range(cfg.seeds):
            history = _train(cfg, spec, arch, work / "runs" / f"{tag}-seed{seed}", seed)
            row.top1.append(history[-1]["val_top1"])
            row.top5.append(history[-1]["val_top5"])
            row.seconds.append(history[-1]["elapsed"])
            row.curves.append([(h["elapsed"], h["val_top1"]) for h in history if "val_top1" in h])
        rows.append(row)
        on_row(row)

    jpeg_for = cfg.jpeg_match or next(iter(cfg.codecs))
    for method, checkpoints in cfg.codecs.items():
        for i, ck in enumerate(checkpoints):
            ds = work / "latents" / f"{method}-{i}"
            policy = ImagePolicy(size=0, scales=cfg.augment.stored_scales())  # members: all scales
            bpp = convert_arm(str(source), str(ds), ck, policy, shard_size=256)
            latent = InputSpec(str(ds), window=(cfg.window, cfg.window), batch_size=cfg.batch_size,
                               workers=cfg.workers, augment=cfg.augment)
            run(UtilityRow(f"{method} ŷ", ck, bpp), latent, cfg.latent_arch, f"{method}-{i}")
            if jpeg_for not in ("all", method):
                continue
            jpegs = work / "jpeg" / f"{method}-{i}"
            reached = write_jpeg_copy(source, jpegs, bpp)
            run(UtilityRow("JPEG pixels", f"matched to {method} ŷ", reached, target_bpp=bpp),
                replace(pixel, data=str(jpegs)), cfg.pixel_arch, f"jpeg-{method}-{i}")
    run(UtilityRow("original pixels", None, None), pixel, cfg.pixel_arch, "original")
    rows = [r.to_json() for r in rows]
    return {"config": asdict(cfg), "rows": rows,
            "equal_time": equal_time(rows, lambda r: (), ("method", "checkpoint", "bpp")),
            "step_cost": step_cost(cfg.cost_batch)}


def plot_utility(result: dict, path, title: str) -> None:
    """Val top-1 (mean ± std over seeds) against bpp, one line per method; the ceiling dashed."""
    from pipeline.eval.plots import new_axes, save_axes

    fig, ax = new_axes()
    by_method: dict[str, list] = {}
    for r in result["rows"]:
        if r["bpp"] is None:
            ax.axhline(r["top1_mean"], linestyle="--", color="grey", label=r["method"])
        else:
            by_method.setdefault(r["method"], []).append(r)
    for method, rs in by_method.items():
        rs = sorted(rs, key=lambda r: r["bpp"])
        ax.errorbar([r["bpp"] for r in rs], [r["top1_mean"] for r in rs],
                    yerr=[r["top1_std"] for r in rs], marker="o", capsize=3, label=method)
    save_axes(fig, ax, path, "bits per pixel", "val top-1", title)


def save(result: dict, path) -> None:
    Path(path).write_text(json.dumps(result, indent=2))
