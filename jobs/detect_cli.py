"""`latents train detect` and `latents train segment`: Faster R-CNN and DeepLabV3 on ŷ."""

from __future__ import annotations

import typer

from jobs.console import console


def _run(task: str, data: str, arch: str, epochs: int, batch_size: int, lr: float, window: int,
         workers: int, out: str, seed: int, cache: str | None) -> None:
    from pipeline.train.detect import DetectConfig, train_detection

    cfg = DetectConfig(data, task, arch, epochs, batch_size, lr, window=window, workers=workers, seed=seed,
                       cache=cache, out=out)

    def show(r: dict) -> None:
        figures = (f"mAP {r['map']:.3f} AP50 {r['ap50']:.3f}" if task == "detect"
                   else f"mIoU {r['miou']:.3f}")
        console.print(f"epoch {r['epoch']}: loss {r['loss']:.3f} val {figures} ({r['seconds']:.0f} s)")

    train_detection(cfg, show)
    console.print(f"model.pt and metrics.jsonl in {out}/")


def add_commands(train_app: typer.Typer) -> None:
    @train_app.command("detect")
    def train_detect(
        data: str = typer.Option(..., help="Latent dataset converted from a detection source (voc, coco)."),
        arch: str = typer.Option("fasterrcnn-sresnet18", help="fasterrcnn-sresnet18/34/50/101."),
        epochs: int = typer.Option(12), batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
        window: int = typer.Option(12, help="Latent crop side in cells (12 = 192 px)."),
        workers: int = typer.Option(2, help="DataLoader worker processes."),
        out: str = typer.Option("runs/detect", help="Folder for model.pt and metrics.jsonl."),
        seed: int = typer.Option(0),
        cache: str = typer.Option(None, help="Warm decoded-latent cache directory (local disk)."),
    ):
        """Faster R-CNN (FPN) on ŷ: mAP@[.5:.95] and AP50 (pycocotools' COCOeval) on the val split."""
        _run("detect", data, arch, epochs, batch_size, lr, window, workers, out, seed, cache)

    @train_app.command("segment")
    def train_segment(
        data: str = typer.Option(..., help="Latent dataset with class masks (VOC SegmentationClass, COCO)."),
        arch: str = typer.Option("deeplabv3-sresnet18", help="deeplabv3-sresnet18/34/50/101."),
        epochs: int = typer.Option(12), batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
        window: int = typer.Option(12, help="Latent crop side in cells (12 = 192 px)."),
        workers: int = typer.Option(2, help="DataLoader worker processes."),
        out: str = typer.Option("runs/segment", help="Folder for model.pt and metrics.jsonl."),
        seed: int = typer.Option(0),
        cache: str = typer.Option(None, help="Warm decoded-latent cache directory (local disk)."),
    ):
        """DeepLabV3 (ASPP) on ŷ: mIoU on the val split (255 = ignore)."""
        _run("segment", data, arch, epochs, batch_size, lr, window, workers, out, seed, cache)
