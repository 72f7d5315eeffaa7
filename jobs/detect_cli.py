"""`latents train detect` and `latents train segment`: Faster R-CNN and DeepLabV3 on ŷ."""

from __future__ import annotations

import typer

from jobs.console import console, print_fewshot


def _run(task: str, data: str, arch: str | None, epochs: int, batch_size: int, lr: float, window: int,
         workers: int, out: str, seed: int, cache: str | None, pixels: bool, ray_workers: int = 0,
         use_gpu: bool = False, address: str | None = None, resume: bool = False) -> None:
    from pipeline.train.detect import DetectConfig, train_detection

    model = "fasterrcnn" if task == "detect" else "deeplabv3"
    arch = arch or f"{model}-{'' if pixels else 's'}resnet18"
    cfg = DetectConfig(data, task, arch, epochs, batch_size, lr, window=window, workers=workers, seed=seed,
                       cache=cache, out=out, pixels=pixels, resume=resume)

    def show(r: dict) -> None:
        if "resumed" in r:
            console.print(f"resuming from {r['resumed']} at epoch {r['epoch']}")
            return
        figures = (f"mAP {r['map']:.3f} AP50 {r['ap50']:.3f}" if task == "detect"
                   else f"mIoU {r['miou']:.3f}")
        console.print(f"epoch {r['epoch']}: loss {r['loss']:.3f} val {figures} ({r['seconds']:.0f} s)")

    if ray_workers:
        from jobs.train import run_detect_ray

        res = run_detect_ray(cfg, ray_workers, use_gpu, address)
        if res.error:
            raise OSError(f"Ray Train failed: {res.error}")
        for rec in res.metrics_dataframe.to_dict("records") if res.metrics_dataframe is not None else []:
            show(rec)
    else:
        train_detection(cfg, show)
    console.print(f"model.pt and metrics.jsonl in {out}/")


def _task_command(task: str, model: str, data_help: str, doc: str):
    """The `train detect` / `train segment` command: the same options, its own defaults."""
    def command(
        data: str = typer.Option(..., help=data_help),
        arch: str = typer.Option(None, help=f"{model}-sresnet18/34/50/101 (default 18); with --pixels "
                                 f"{model}-resnet*."),
        epochs: int = typer.Option(12), batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
        window: int = typer.Option(12, help="Latent crop side in cells (12 = 192 px)."),
        workers: int = typer.Option(2, help="DataLoader worker processes."),
        out: str = typer.Option(f"runs/{task}", help="Folder for model.pt and metrics.jsonl."),
        seed: int = typer.Option(0),
        cache: str = typer.Option(None, help="Warm decoded-latent cache directory (local disk)."),
        pixels: bool = typer.Option(False, help="Baseline: --data is the source (voc, coco); its pixels, "
                                    "made ready as the converter does, cut by the same window rule."),
        ray_workers: int = typer.Option(0, help="> 0: Ray Train TorchTrainer with this many DDP workers."),
        use_gpu: bool = typer.Option(False, help="With --ray-workers: one GPU per worker."),
        address: str = typer.Option(None, help="Ray cluster address (default: embedded)."),
        resume: bool = typer.Option(False, help="Continue from OUT/last.pt (saved at every epoch's end) "
                                    "at the next epoch; the same options, or an error naming them."),
    ):
        _run(task, data, arch, epochs, batch_size, lr, window, workers, out, seed, cache, pixels,
             ray_workers, use_gpu, address, resume)

    command.__doc__ = doc
    return command


def add_commands(train_app: typer.Typer) -> None:
    train_app.command("detect")(_task_command(
        "detect", "fasterrcnn", "Latent dataset converted from a detection source (voc, coco).",
        "Faster R-CNN (FPN) on ŷ: mAP@[.5:.95] and AP50 (pycocotools' COCOeval) on the val split."))
    train_app.command("segment")(_task_command(
        "segment", "deeplabv3", "Latent dataset with class masks (VOC SegmentationClass, COCO).",
        "DeepLabV3 (ASPP) on ŷ: mIoU on the val split (255 = ignore)."))


def add_fewshot_detect(fewshot_app: typer.Typer) -> None:
    @fewshot_app.command("detect")
    def fewshot_detect(
        data: str = typer.Option(..., help="Latent dataset converted from a detection source (train, val)."),
        novel: str = typer.Option(None, help="Comma-separated novel class names."),
        split_file: str = typer.Option(None, help="A fewshot.json (make-task --detection) naming them."),
        voc_split: int = typer.Option(None, help="TFA's PASCAL VOC split 1, 2 or 3 (5 novel classes)."),
        arch: str = typer.Option("fasterrcnn-sresnet18"), base_epochs: int = typer.Option(12),
        batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
        window: int = typer.Option(12, help="Latent crop side in cells."),
        workers: int = typer.Option(2), shots: str = typer.Option("1,2,3,5,10"), seeds: int = typer.Option(3),
        finetune_steps: int = typer.Option(200, help="Steps of last-layer fine-tuning per (k, seed)."),
        output: str = typer.Option("runs/fewshot-detect.json", help="Where the table is written as JSON."),
    ):
        """TFA few-shot detection: base training on the base classes, then cosine box classifier
        and box regressor fine-tuned on k shots per class; novel and base AP50, mean ± std."""
        import json
        from pathlib import Path

        from pipeline.train.detect import DetectConfig
        from pipeline.train.fewshot_detect import VOC_SPLITS, FewShotDetectConfig, run_fewshot_detection

        if voc_split is not None:
            if voc_split not in VOC_SPLITS:
                raise ValueError(f"--voc-split is 1, 2 or 3, not {voc_split}")
            names = VOC_SPLITS[voc_split]
        elif split_file:
            names = tuple(json.loads(Path(split_file).read_text())["novel"])
        elif novel:
            names = tuple(n.strip() for n in novel.split(",") if n.strip())
        else:
            raise ValueError("name the novel classes with --novel, --split-file or --voc-split")
        cfg = FewShotDetectConfig(
            DetectConfig(data, "detect", arch, base_epochs, batch_size, lr, window=window, workers=workers,
                         eval_every=base_epochs),
            names, shots=tuple(int(k) for k in shots.split(",")), seeds=tuple(range(seeds)),
            finetune_steps=finetune_steps)
        r = run_fewshot_detection(cfg, log=lambda d: console.print(
            f"k={d['k']} seed {d['seed']}: novel AP50 {d['novel_ap50']:.3f} base AP50 {d['base_ap50']:.3f}"
            if "k" in d else f"base epoch {d['epoch']}: loss {d['loss']:.3f}"))
        rows = [(row["k"], row["novel_ap50_mean"], row["novel_ap50_std"], row["base_ap50_mean"],
                 row["base_ap50_std"]) for row in r["table"]]
        print_fewshot(f"{arch} few-shot detection (TFA, cosine scale 20), {seeds} seeds: AP50", rows, r,
                      Path(output))
