"""`latents eval downstream`: detection, segmentation and few-shot detection from ŷ against
the pixels they replace, at equal epochs and at equal training time.

On one detection source (VOC layout, e.g. `latents make-task --detection`), for each codec
checkpoint (a rate point, grouped by name, as in `latents eval utility`):

- the source converted with it (the converter's default image policy, which the pixel
  baselines also use), and a Faster R-CNN / DeepLabV3 on its ŷ;
- once, the same models on the source's pixels, made ready as the converter makes them and
  cut by the same window rule (`pipeline.train.pixel_detect`);

each from scratch and/or from a trunk pretrained on the same representation (the seed's
transfer protocol, ``init_latent`` / ``init_pixels``), over several seeds, with one
augmentation policy for every arm. Every run keeps its folder under ``work`` and resumes
(`--resume`): a finished run is read back, not trained again.

Two comparisons come out of the same runs:

- **equal epochs**: each arm's final figure (mean ± std over seeds);
- **equal time**: the training wall clock of the quickest arm of a (task, start) pair is the
  budget; every arm's figure is the one it had reached at its last evaluation inside that
  budget (evaluation time excluded; ŷ should get there sooner if reading it is cheaper).

With ``fewshot`` (a ``fewshot.json`` naming the novel classes) TFA's few-shot detection runs
on each codec's ŷ and on pixels: novel and base AP50 at each k (the shape of the seed's
Table 4).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, TrainError
from pipeline.eval.budget import equal_time
from pipeline.eval.utility import convert_arm
from pipeline.images import ImagePolicy
from pipeline.models.detection import detector_anchors
from pipeline.shards.index import bits_per_pixel
from pipeline.sources import list_source, read_bytes
from pipeline.storage import atomic_write, read_file
from pipeline.train.data import Augment
from pipeline.train.detect import DetectConfig, train_detection

METRIC = {"detect": "ap50", "segment": "miou"}
INITS = ("scratch", "pretrained")


@dataclass(frozen=True)
class DownstreamConfig:
    source: str  # a detection source with train and val splits (voc, coco)
    work: str  # folder for the converted datasets, the runs and the few-shot tables
    codecs: dict[str, list[str]] = field(default_factory=lambda: {"rd": ["bundled:default"]})
    tasks: tuple[str, ...] = ("detect", "segment")
    inits: tuple[str, ...] = ("scratch",)  # scratch and/or pretrained (needs both init paths)
    init_latent: str | None = None  # a classifier's model.pt on ŷ (`latents train classify`)
    init_pixels: str | None = None  # a classifier's model.pt on pixels (`train classify --pixels`)
    seeds: int = 3
    epochs: int = 8
    batch_size: int = 8
    lr: float = 0.02
    window: int = 12  # latent cells (pixels: 16× this)
    workers: int = 2
    augment: Augment = Augment()  # one geometric policy for every arm
    roi_batch: int = 128
    fpn_from: int = 2
    anchors: tuple[int, ...] | None = None
    fewshot: str | None = None  # a fewshot.json: TFA few-shot detection on every arm
    shots: tuple[int, ...] = (1, 5, 10)
    fewshot_seeds: int = 2
    finetune_steps: int = 100

    def __post_init__(self):
        if self.seeds < 1 or self.epochs < 1:
            raise ConfigError(f"--seeds and --epochs must be at least 1, got {self.seeds} and {self.epochs}")
        bad = [t for t in self.tasks if t not in METRIC]
        if bad or not (self.tasks or self.fewshot):
            raise ConfigError(f"--task is detect or segment (repeatable), not {', '.join(bad) or '(none)'}")
        bad = [i for i in self.inits if i not in INITS]
        if bad or not self.inits:
            raise ConfigError(f"--init is scratch or pretrained (repeatable), not "
                              f"{', '.join(bad) or '(none)'}")
        if "pretrained" in self.inits and not (self.init_latent and self.init_pixels):
            raise ConfigError("--init pretrained needs both --init-latent and --init-pixels: a classifier "
                              "trained on each representation (`make pretrain` makes both)")
        if not self.codecs:
            raise ConfigError("name at least one --codec NAME=CHECKPOINT")
        detector_anchors(self.fpn_from, self.anchors, self.roi_batch)  # before hours of training
        if self.fewshot and (not self.shots or min(self.shots) < 1 or self.fewshot_seeds < 1):
            raise ConfigError(f"--shots are whole numbers >= 1 and --fewshot-seeds >= 1, got "
                              f"{list(self.shots)} and {self.fewshot_seeds}")

    def novel(self) -> tuple[str, ...]:
        """The novel classes ``fewshot`` names (a fewshot.json from `make-task --detection`)."""
        try:
            novel = json.loads(read_file(self.fewshot))["novel"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--fewshot {self.fewshot}: not a fewshot.json naming its novel classes "
                              f"({type(exc).__name__}: {exc}); `latents make-task --detection` writes one"
                              ) from None
        if not novel or not all(isinstance(n, str) for n in novel):
            raise ConfigError(f"--fewshot {self.fewshot}: its \"novel\" list names no classes")
        return tuple(novel)


def _run_config(cfg: DownstreamConfig, task: str, data: str, pixels: bool, init: str | None, seed: int,
                out: Path | None) -> DetectConfig:
    arch = f"{'fasterrcnn' if task == 'detect' else 'deeplabv3'}-{'' if pixels else 's'}resnet18"
    detector = {"roi_batch": cfg.roi_batch, "fpn_from": cfg.fpn_from, "anchors": cfg.anchors} \
        if task == "detect" else {}
    return DetectConfig(data, task, arch, cfg.epochs, cfg.batch_size, cfg.lr, window=cfg.window,
                        workers=cfg.workers, seed=seed, out=str(out) if out else None, pixels=pixels,
                        resume=out is not None, augment=cfg.augment, init_from=init, **detector)


def source_bpp(source: str) -> float:
    """The pixel arm's own storage: bits per pixel of the source files as they are (train + val)."""
    from PIL import Image

    nbytes = pixels = 0
    for split in ("train", "val"):
        for item in list_source("auto", source, split=split).items:
            data = read_bytes(item.uri)
            with Image.open(io.BytesIO(data)) as im:
                pixels += im.width * im.height
            nbytes += len(data)
    return bits_per_pixel(nbytes, pixels) if pixels else float("nan")


def _convert(cfg: DownstreamConfig, name: str, i: int, checkpoint: str) -> tuple[str, float]:
    out = str(Path(cfg.work) / "latents" / f"{name}-{i}")
    policy = ImagePolicy(scales=cfg.augment.stored_scales())  # the pixel baselines' policy
    return out, convert_arm(cfg.source, out, checkpoint, policy, shard_size=64)


def _arms(cfg: DownstreamConfig, on_line) -> list[dict]:
    """The arms: each codec's ŷ (its dataset, bpp) and the pixels."""
    arms = []
    for name, checkpoints in cfg.codecs.items():
        for i, ck in enumerate(checkpoints):
            data, bpp = _convert(cfg, name, i, ck)
            on_line(f"{name} ŷ ({ck}): {bpp:.3f} bpp")
            arms.append({"arm": f"{name} ŷ", "tag": f"{name}-{i}", "checkpoint": ck, "data": data,
                         "bpp": bpp, "pixels": False})
    arms.append({"arm": "pixels", "tag": "pixels", "checkpoint": None, "data": cfg.source,
                 "bpp": source_bpp(cfg.source), "pixels": True})
    return arms


def _train(run: DetectConfig) -> list[dict]:
    """One run's history (trained, resumed or read back); a run its folder refuses is named
    with what to do."""
    try:
        return train_detection(run, log=lambda rec: None)["history"]
    except (ConfigError, TrainError) as exc:
        raise type(exc)(f"{run.out}: {exc} (this eval's runs live under --work: give another --work, "
                        "or delete that run's folder to train it again)") from None


def evaluate_downstream(cfg: DownstreamConfig, on_line=lambda line: None) -> dict:
    """Every run of the module docstring; ``on_line`` gets one line per finished run."""
    work = Path(cfg.work)
    novel = cfg.novel() if cfg.fewshot else ()  # a bad fewshot.json fails now, not after hours
    classes = list_source("auto", cfg.source, split="train").classes
    if set(novel) - set(classes):
        raise ConfigError(f"--fewshot {cfg.fewshot} names novel classes {sorted(set(novel) - set(classes))} "
                          f"that {cfg.source} does not hold ({', '.join(classes)})")
    arms = _arms(cfg, on_line)
    rows = []
    for task in cfg.tasks:
        for init in cfg.inits:
            for arm in arms:
                trunk = None if init == "scratch" else (cfg.init_pixels if arm["pixels"] else cfg.init_latent)
                values, seconds, curves = [], [], []
                for seed in range(cfg.seeds):
                    out = work / "runs" / f"{task}-{init}-{arm['tag']}-seed{seed}"
                    run = _run_config(cfg, task, arm["data"], arm["pixels"], trunk, seed, out)
                    history = _train(run)
                    metric = METRIC[task]
                    values.append(history[-1][metric])
                    seconds.append(history[-1]["elapsed"])
                    curves.append([(h["elapsed"], h[metric]) for h in history if metric in h])
                    on_line(f"{task} {init} {arm['arm']} seed {seed}: {metric} {values[-1]:.3f} "
                            f"({seconds[-1]:.0f} s)")
                rows.append({"task": task, "init": init, "arm": arm["arm"], "checkpoint": arm["checkpoint"],
                             "bpp": arm["bpp"], "metric": METRIC[task], "values": values,
                             "mean": float(np.mean(values)), "std": float(np.std(values)),
                             "seconds": seconds, "seconds_mean": float(np.mean(seconds)), "curves": curves})
    fewshot = [_fewshot(cfg, arm, novel, on_line) for arm in arms] if cfg.fewshot else []
    timed = equal_time(rows, lambda r: (r["task"], r["init"]),
                       ("task", "init", "arm", "checkpoint", "bpp", "metric"))
    return {"config": asdict(cfg), "rows": rows, "equal_time": timed,
            "fewshot": fewshot}


def _fewshot(cfg: DownstreamConfig, arm: dict, novel: tuple[str, ...], on_line) -> dict:
    """TFA few-shot detection on one arm (its trunk pretrained where the config has one);
    the table is kept in ``work`` and read back when its config is unchanged."""
    from pipeline.train.fewshot_detect import FewShotDetectConfig, run_fewshot_detection

    trunk = None
    if "pretrained" in cfg.inits:
        trunk = cfg.init_pixels if arm["pixels"] else cfg.init_latent
    base = replace(_run_config(cfg, "detect", arm["data"], arm["pixels"], trunk, 0, None),
                   eval_every=cfg.epochs)
    fc = FewShotDetectConfig(base, novel, shots=cfg.shots, seeds=tuple(range(cfg.fewshot_seeds)),
                             finetune_steps=cfg.finetune_steps)
    path = Path(cfg.work) / f"fewshot-{arm['tag']}.json"
    key = json.loads(json.dumps(asdict(fc), default=list))
    try:
        saved = json.loads(path.read_text())
        if saved.get("config") == key:
            return saved
    except (OSError, ValueError):  # none yet, or unreadable: made again
        pass
    r = run_fewshot_detection(fc, log=lambda d: None)
    out = json_safe({"arm": arm["arm"], "checkpoint": arm["checkpoint"], "bpp": arm["bpp"],
                     "init": "pretrained" if trunk else "scratch", "config": key, "table": r["table"],
                     "runs": r["runs"]})
    atomic_write(str(path), json.dumps(out, indent=1, allow_nan=False).encode())
    for row in r["table"]:
        on_line(f"few-shot {arm['arm']} k={row['k']}: novel AP50 {row['novel_ap50_mean']:.3f}")
    return out


def json_safe(obj):
    """``obj`` as strict JSON holds it: tuples as lists, NaN (a class the val split lacks) as None."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def save(result: dict, path) -> None:
    Path(path).write_text(json.dumps(json_safe(result), indent=1, default=list, allow_nan=False))
