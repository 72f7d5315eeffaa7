"""`latents fewshot classify | detect`: TFA two-stage few-shot learning from ŷ."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.console import App, console, int_list, print_fewshot, renamed
from jobs.train_cli import DETECTOR, detector
from pipeline.errors import ConfigError

fewshot_app = App(no_args_is_help=True, help="TFA two-stage few-shot learning from ŷ: classify or detect.")


def novel_names(novel: str | None, split_file: Path | None, other: str = "") -> tuple[str, ...]:
    """The novel classes from --novel (comma-separated) or --split-file (a fewshot.json)."""
    if split_file:
        return tuple(json.loads(split_file.read_text())["novel"])
    if novel:
        return tuple(n.strip() for n in novel.split(",") if n.strip())
    raise ConfigError("name the novel classes with --novel or --split-file"
                      + (f" or {other}" if other else ""))


#: the options both few-shot commands take
SHARED = {
    "novel": typer.Option(None, help="Comma-separated novel class names."),
    "old_arch": typer.Option(None, "--arch", hidden=True, help="Deprecated: --model."),
    "workers": typer.Option(2, help="DataLoader worker processes."),
    "shots": typer.Option("1,2,3,5,10", help="The k of each k-shot set, comma-separated."),
    "seeds": typer.Option(3, help="k-shot draws (and fine-tunings) per k."),
}


@fewshot_app.command("classify")
def fewshot(
    data: str = typer.Option(..., help="Latent dataset root with train and val splits."),
    novel: str = SHARED["novel"],
    split_file: Path = typer.Option(None, help="A fewshot.json (from make-task) naming the novel classes."),
    arch: str = typer.Option(None, "--model", help="The network (default sresnet18)."),
    old_arch: str = SHARED["old_arch"],
    base_epochs: int = typer.Option(10),
    lr: float = typer.Option(0.05), batch_size: int = typer.Option(32),
    window: int = typer.Option(14), workers: int = SHARED["workers"],
    shots: str = SHARED["shots"], seeds: int = SHARED["seeds"],
    classifier: str = typer.Option("cosine", help="cosine or linear last layer."),
    output: Path = typer.Option(Path("runs/fewshot.json"), help="Where the table is written as JSON."),
):
    """TFA two-stage few-shot: base training, then last-layer fine-tuning on k shots per class."""
    arch = renamed(arch, old_arch, "--model", "--arch", "sresnet18")
    from pipeline.train.data import InputSpec
    from pipeline.train.fewshot import FewShotConfig, run_fewshot

    cfg = FewShotConfig(InputSpec(data, window=(window, window), batch_size=batch_size, workers=workers),
                        novel_names(novel, split_file), arch=arch, base_epochs=base_epochs, lr=lr,
                        shots=int_list(shots, "--shots"), seeds=tuple(range(seeds)),
                        classifier=classifier)
    r = run_fewshot(cfg, log=lambda d: console.print(
        f"base epoch {d['epoch']}: val top-1 (base classes) {d['val_top1']:.3f}"))
    rows = [(row["shots"], row["novel_mean"], row["novel_std"], row["base_mean"], row["base_std"])
            for row in r["rows"]]
    print_fewshot(f"{arch} few-shot ({classifier} head), {len(cfg.seeds)} seeds: accuracy over all classes",
                  rows, r, output)


@fewshot_app.command("detect")
def fewshot_detect(
    data: str = typer.Option(..., help="Latent dataset converted from a detection source (train, val)."),
    novel: str = SHARED["novel"],
    split_file: str = typer.Option(None, help="A fewshot.json (make-task --detection) naming them."),
    voc_split: int = typer.Option(None, help="TFA's PASCAL VOC split 1, 2 or 3 (5 novel classes)."),
    arch: str = typer.Option(None, "--model", help="The detector (default fasterrcnn-sresnet18)."),
    old_arch: str = SHARED["old_arch"],
    base_epochs: int = typer.Option(12),
    batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
    window: int = typer.Option(12, help="Latent crop side in cells."),
    workers: int = SHARED["workers"], shots: str = SHARED["shots"], seeds: int = SHARED["seeds"],
    finetune_steps: int = typer.Option(200, help="Steps of last-layer fine-tuning per (k, seed)."),
    init_from: str = typer.Option(None, help="A classifier's model.pt on the same representation: base "
                                  "training's trunk starts from it."),
    pixels: bool = typer.Option(False, help="Baseline: --data is the source (voc, coco); its pixels, made "
                                "ready as the converter does, the same shots, crops and boxes."),
    roi_batch: int = DETECTOR["roi_batch"], fpn_from: int = DETECTOR["fpn_from"],
    anchors: str = DETECTOR["anchors"],
    output: str = typer.Option("runs/fewshot-detect.json", help="Where the table is written as JSON."),
):
    """TFA few-shot detection: base training on the base classes, then cosine box classifier
    and box regressor fine-tuned on k shots per class; novel and base AP50, mean ± std."""
    arch = renamed(arch, old_arch, "--model", "--arch", f"fasterrcnn-{'' if pixels else 's'}resnet18")
    from pipeline.train.detect import DetectConfig
    from pipeline.train.fewshot_detect import VOC_SPLITS, FewShotDetectConfig, run_fewshot_detection

    if voc_split is not None:
        if voc_split not in VOC_SPLITS:
            raise ConfigError(f"--voc-split is 1, 2 or 3, not {voc_split}")
        names = VOC_SPLITS[voc_split]
    else:
        names = novel_names(novel, Path(split_file) if split_file else None, "--voc-split")
    cfg = FewShotDetectConfig(
        DetectConfig(data, "detect", arch, base_epochs, batch_size, lr, window=window, workers=workers,
                     eval_every=base_epochs, init_from=init_from, pixels=pixels,
                     **detector(roi_batch, fpn_from, anchors)),
        names, shots=int_list(shots, "--shots"), seeds=tuple(range(seeds)),
        finetune_steps=finetune_steps)
    r = run_fewshot_detection(cfg, log=lambda d: console.print(
        f"k={d['k']} seed {d['seed']}: novel AP50 {d['novel_ap50']:.3f} base AP50 {d['base_ap50']:.3f}"
        if "k" in d else f"base epoch {d['epoch']}: loss {d['train_loss']:.3f}"))
    rows = [(row["k"], row["novel_ap50_mean"], row["novel_ap50_std"], row["base_ap50_mean"],
             row["base_ap50_std"]) for row in r["table"]]
    print_fewshot(f"{arch} few-shot detection (TFA, cosine scale 20), {seeds} seeds: AP50", rows, r,
                  Path(output))
