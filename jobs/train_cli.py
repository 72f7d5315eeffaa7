"""`latents train classify | detect | segment`: models trained straight from latent shards."""

from __future__ import annotations

import typer

from jobs.console import App, console, int_list, renamed
from pipeline.errors import ConfigError, TrainError

train_app = App(no_args_is_help=True, help="Train models straight from latent shards.")

AUGMENT_HELP = ("The training windows' geometry, the same for ŷ and pixels: usual (ŷ a fixed window, "
                "pixels RandomResizedCrop), window (a fixed window for both), scale (a region of "
                "--scale-aug of the area, aspect --aspect, resampled to the window, for both) or "
                "members (the image at one of --members scales each epoch, then a window: ŷ the "
                "codec's own encodings from `convert --scales`, pixels the image resized).")


def augment(policy: str | None, scale_aug: str, aspect: str, resample: str, members: str = "1,0.75,0.5"):
    """The Augment the options describe (--scale-aug alone means the scale policy)."""
    from pipeline.train.data import Augment

    try:
        pair = [tuple(float(v) for v in s.split(",")) for s in (scale_aug or "0.08,1", aspect)]
        scales = tuple(float(v) for v in members.split(","))
    except ValueError:
        raise ConfigError(f"--scale-aug, --aspect and --members take numbers separated by commas, got "
                          f"{scale_aug!r}, {aspect!r} and {members!r}") from None
    if any(len(p) != 2 for p in pair):
        raise ConfigError(f"--scale-aug and --aspect take LOW,HIGH, got {scale_aug!r} and {aspect!r}")
    return Augment(policy or ("scale" if scale_aug else "usual"), pair[0], pair[1], resample, scales)


#: the augmentation options every train command takes
AUG = {
    "policy": typer.Option(None, "--augment", help=AUGMENT_HELP),
    "scale_aug": typer.Option(None, help="The region's area fraction LOW,HIGH (default 0.08,1); "
                              "alone it means --augment scale."),
    "aspect": typer.Option("0.75,1.3333", help="The region's aspect range under --augment scale."),
    "resample": typer.Option("nearest", help="ŷ under --augment scale: nearest (keeps ŷ's integers), "
                             "bilinear or area."),
    "members": typer.Option("1,0.75,0.5", help="The scales --augment members draws among (1: the image "
                            "itself)."),
}

#: the options that shape Faster R-CNN (`train detect`, `fewshot detect`)
DETECTOR = {
    "roi_batch": typer.Option(128, help="Detection: RoIs sampled per image for the box head."),
    "fpn_from": typer.Option(2, help="Detection: the finest pyramid level, 2 (P2–P6), 3 or 4."),
    "anchors": typer.Option(None, help="Detection: one anchor size in pixels per pyramid level, "
                            "comma-separated (default 32,64,128,256,512 from P2)."),
}


def detector(roi_batch: int, fpn_from: int, anchors: str | None) -> dict:
    """The DetectConfig fields the DETECTOR options set."""
    return {"roi_batch": roi_batch, "fpn_from": fpn_from, "anchors": int_list(anchors, "--anchors")}


@train_app.command("classify")
def train_classify(
    data: str = typer.Option(..., help="Latent dataset root (or an image root with --pixels)."),
    arch: str = typer.Option(None, "--model", help="sresnet18/34/50/101, cresnet*, resnet* (pixels); "
                             "default sresnet18."),
    old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --model."),
    epochs: int = typer.Option(10), batch_size: int = typer.Option(32), lr: float = typer.Option(0.05),
    window: int = typer.Option(14, help="Latent crop side (14 = 224 px); pixels use 16x this."),
    workers: int = typer.Option(2, help="DataLoader worker processes (ŷ decoding runs there)."),
    pixels: bool = typer.Option(False, help="Baseline: train on the JPEG source images instead."),
    out: str = typer.Option("runs/classify", help="Folder for model.pt, last.pt and metrics.jsonl."),
    seed: int = typer.Option(0),
    ray_workers: int = typer.Option(0, help="> 0: Ray Train TorchTrainer with this many DDP workers."),
    use_gpu: bool = typer.Option(False, help="With --ray-workers: one GPU per worker."),
    address: str = typer.Option(None, help="Ray cluster address (default: embedded)."),
    cache: str = typer.Option(None, help="Warm decoded-latent cache directory (local disk): epoch 1 "
                                         "fills it, later epochs read ŷ from it instead of decoding."),
    cache_gb: float = typer.Option(20.0, help="Cache size limit; least-recently-used shards are evicted."),
    resume: bool = typer.Option(False, help="Continue from OUT/last.pt at the exact next sample "
                                "(same options; a fresh run when there is none)."),
    checkpoint_every: int = typer.Option(0, help="Also save OUT/last.pt every this many steps "
                                         "(0: at each epoch's end only)."),
    policy: str = AUG["policy"], scale_aug: str = AUG["scale_aug"],
    aspect: str = AUG["aspect"], resample: str = AUG["resample"], members: str = AUG["members"],
):
    """Classification on ŷ (or pixels): top-1/top-5 on the val split each epoch, JSON-lines metrics."""
    from pipeline.train.classify import TrainConfig
    from pipeline.train.data import InputSpec

    spec = InputSpec(data, "pixels" if pixels else "latent", (window, window), batch_size, workers, seed,
                     cache, int(cache_gb * 2**30), augment(policy, scale_aug, aspect, resample, members))
    arch = renamed(arch, old_arch, "--model", "--arch", "sresnet18")
    _train(TrainConfig(spec, arch=arch, epochs=epochs, lr=lr, out=out, seed=seed,
                       checkpoint_every=checkpoint_every, resume=resume), ray_workers, use_gpu, address)


def epoch_line(r: dict) -> str:
    """One console line for an engine record (any task)."""
    if "resumed" in r:
        return f"resuming from {r['resumed']} at epoch {r['epoch']}, batch {r['batch']}"
    parts = [f"epoch {r['epoch']}: loss {r['train_loss']:.3f}"]
    if "train_acc" in r:
        parts.append(f"train {r['train_acc']:.3f}")
    if "val_top1" in r:
        parts.append(f"val top-1 {r['val_top1']:.3f} top-5 {r['val_top5']:.3f}")
    if "map" in r:
        parts.append(f"val mAP {r['map']:.3f} AP50 {r['ap50']:.3f}")
    if "miou" in r:
        parts.append(f"val mIoU {r['miou']:.3f}")
    rate = f"{r['samples_per_s']:.1f} samples/s" if "samples_per_s" in r else f"{r['seconds']:.0f} s"
    return " ".join(parts) + f" ({rate})"


def _train(cfg, ray_workers: int, use_gpu: bool, address: str | None) -> None:
    """Any task's run, here or on Ray Train; one line per epoch; the files it leaves."""
    from jobs.train import run_local, run_ray

    if ray_workers:
        res = run_ray(cfg, ray_workers, use_gpu, address)
        if res.error:
            raise TrainError(f"Ray Train failed: {res.error}")
        for rec in res.metrics_dataframe.to_dict("records") if res.metrics_dataframe is not None else []:
            # a key some epochs lack (evaluation every few epochs) is NaN in the others' rows
            console.print(epoch_line({k: v for k, v in rec.items() if v == v}))
    else:
        run_local(cfg, lambda r: console.print(epoch_line(r)))
    console.print(f"model.pt, last.pt and metrics.jsonl in {cfg.out}/")


def _run(task: str, data: str, arch: str | None, epochs: int, batch_size: int, lr: float, window: int,
         workers: int, out: str, seed: int, cache: str | None, pixels: bool, ray_workers: int = 0,
         use_gpu: bool = False, address: str | None = None, resume: bool = False,
         checkpoint_every: int = 0, aug=None, init_from: str | None = None,
         detector: dict | None = None) -> None:
    from pipeline.train.data import Augment
    from pipeline.train.detect import DetectConfig

    model = "fasterrcnn" if task == "detect" else "deeplabv3"
    arch = arch or f"{model}-{'' if pixels else 's'}resnet18"
    cfg = DetectConfig(data, task, arch, epochs, batch_size, lr, window=window, workers=workers, seed=seed,
                       cache=cache, out=out, pixels=pixels, resume=resume, checkpoint_every=checkpoint_every,
                       augment=aug or Augment(), init_from=init_from, **(detector or {}))
    _train(cfg, ray_workers, use_gpu, address)


def _task_command(task: str, model: str, data_help: str, doc: str):
    """The `train detect` / `train segment` command: the same options, its own defaults."""
    def command(
        data: str = typer.Option(..., help=data_help),
        arch: str = typer.Option(None, "--model",
                                 help=f"{model}-sresnet18/34/50/101 (default 18); with --pixels "
                                 f"{model}-resnet*."),
        old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --model."),
        epochs: int = typer.Option(12), batch_size: int = typer.Option(8), lr: float = typer.Option(0.02),
        window: int = typer.Option(12, help="Latent crop side in cells (12 = 192 px)."),
        workers: int = typer.Option(2, help="DataLoader worker processes."),
        out: str = typer.Option(f"runs/{task}", help="Folder for model.pt, last.pt and metrics.jsonl."),
        seed: int = typer.Option(0),
        cache: str = typer.Option(None, help="Warm decoded-latent cache directory (local disk)."),
        pixels: bool = typer.Option(False, help="Baseline: --data is the source (voc, coco); its pixels, "
                                    "made ready as the converter does, cut by the same window rule."),
        ray_workers: int = typer.Option(0, help="> 0: Ray Train TorchTrainer with this many DDP workers."),
        use_gpu: bool = typer.Option(False, help="With --ray-workers: one GPU per worker."),
        address: str = typer.Option(None, help="Ray cluster address (default: embedded)."),
        resume: bool = typer.Option(False, help="Continue from OUT/last.pt at the exact next batch "
                                    "(--pixels: the next epoch); the same options, or an error naming "
                                    "them."),
        checkpoint_every: int = typer.Option(0, help="Also save OUT/last.pt every this many steps "
                                             "(0: at each epoch's end only; ŷ inputs)."),
        policy: str = AUG["policy"], scale_aug: str = AUG["scale_aug"],
        aspect: str = AUG["aspect"], resample: str = AUG["resample"], members: str = AUG["members"],
        init_from: str = typer.Option(None, help="A classifier's model.pt (`latents train classify`) on the "
                                      "same representation: the trunk starts from it (the seed's protocol)."),
        roi_batch: int = DETECTOR["roi_batch"], fpn_from: int = DETECTOR["fpn_from"],
        anchors: str = DETECTOR["anchors"],
    ):
        arch = renamed(arch, old_arch, "--model", "--arch")
        _run(task, data, arch, epochs, batch_size, lr, window, workers, out, seed, cache, pixels,
             ray_workers, use_gpu, address, resume, checkpoint_every,
             augment(policy, scale_aug, aspect, resample, members), init_from,
             detector(roi_batch, fpn_from, anchors))

    command.__doc__ = doc
    return command


train_app.command("detect")(_task_command(
    "detect", "fasterrcnn", "Latent dataset converted from a detection source (voc, coco).",
    "Faster R-CNN (FPN) on ŷ: mAP@[.5:.95] and AP50 (pycocotools' COCOeval) on the val split."))
train_app.command("segment")(_task_command(
    "segment", "deeplabv3", "Latent dataset with class masks (VOC SegmentationClass, COCO).",
    "DeepLabV3 (ASPP) on ŷ: mIoU on the val split (255 = ignore)."))
