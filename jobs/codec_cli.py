"""`latents train-codec` and `latents integerize`: making a codec."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from jobs.console import console, renamed
from pipeline.errors import TrainError


def train_codec_cmd(
    out: str = typer.Argument(..., help="Checkpoint to write (latent-shards format)."),
    arch: str = typer.Option(None, "--codec-arch", help="Codec architecture (default mbt2018-mean)."),
    old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --codec-arch."),
    N: int = typer.Option(64), M: int = typer.Option(96),
    lmbda: float = typer.Option(0.013, help="Rate–distortion trade-off λ_d (λ_d·255²·MSE + bpp)."),
    steps: int = typer.Option(15300), batch_size: int = typer.Option(8),
    patch: int = typer.Option(128), lr: float = typer.Option(3e-4), seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="Torch CPU threads (0: default)."),
    init_from: str = typer.Option(None, help="Start from this checkpoint's tensors where names "
                                  "and shapes match (e.g. a scale-only codec from a mean-scale one)."),
    widen_from: str = typer.Option(None, help="Start a slim-hyperprior of width --N from this narrower "
                                   "scale hyperprior, widened without changing its function (Net2Net)."),
    source: str = typer.Option(None, help="Train on crops of this source (any layout `convert` reads, "
                               "local or fsspec; its train split) instead of the bundled photos."),
    workers: int = typer.Option(2, help="With --source: DataLoader workers decoding and cropping."),
    photos: str = typer.Option(None, help="A photo set from `make photos` (data/photos): its train/ "
                               "photographs join the bundled ones; OUT.data.json lists every file."),
    max_side: int = typer.Option(2048, help="Training photos are held downscaled to this longer side."),
    synthetic: int = typer.Option(0, help="Also train on this many dead-leaves images (768 px, coloured "
                                  "from the training photos)."),
    scales: str = typer.Option("1.0,0.75,0.5", help="Crop scales: each crop is drawn from the photo resized "
                               "by one of these (never below one crop)."),
    resume: bool = typer.Option(False, help="Go on from OUT.state at the exact next step (same options; "
                                "--steps may grow)."),
    heldout: str = typer.Option(None, help="Held-out images (e.g. data/photos/heldout): their PSNR and "
                                "bpp join the log every --heldout-every steps. Never trained on."),
    heldout_every: int = typer.Option(0, help="A multiple of 50 (0: never)."),
    save_every: int = typer.Option(250, help="Write OUT and OUT.state every this many steps."),
    max_minutes: float = typer.Option(0, help="> 0: stop after this much wall clock, OUT and OUT.state "
                                      "written; --resume goes on (e.g. a GPU lent for a while)."),
    utility: str = typer.Option(None, help="classify or detect: also train a task head on ŷ (Eq. 6, "
                                "R + λ_d·D + λ_t·L_task); needs --task-source."),
    task_source: str = typer.Option(None, help="classify: labelled class-per-folder images (a tree, or "
                                    "its train/ split; e.g. `latents make-task`); detect: a voc or coco "
                                    "source (windows of --task-patch px with their boxes)."),
    lmbda_t: float = typer.Option(10.0, help="Weight λ_t of the task loss."),
    task_batch_size: int = typer.Option(16, help="Task batch, drawn apart from the reconstruction batch."),
    task_patch: int = typer.Option(64, help="Task crop side (a multiple of 64)."),
    task_arch: str = typer.Option("sresnet18", help="The head on ŷ (sresnet*, cresnet*; with --utility "
                                  "detect, Faster R-CNN over that trunk)."),
    task_quantise: str = typer.Option("noise", help="ŷ for the task while training: noise or ste."),
    task_workers: int = typer.Option(0, help="> 0: stream the task crops with this many DataLoader "
                                     "workers (ImageNet-sized task sources); 0: hold the task tree in "
                                     "memory."),
    ray_workers: int = typer.Option(0, help="> 0: train on this many Ray Train workers (gradients "
                                    "averaged every step; rank 0 writes the checkpoint)."),
    gpus_per_worker: float = typer.Option(0.0, help="With --ray-workers: GPUs per worker."),
    address: str = typer.Option(None, help="With --ray-workers: the Ray cluster (default: embedded)."),
):
    """Train a codec on the bundled photos (two held out) or --source: rate–distortion, or with --utility
    rate–distortion–utility. Writes OUT, OUT.log.jsonl, OUT.state (resume) and OUT.head.pt."""
    from pipeline.codec_train.train import CodecTrainConfig, train_codec

    arch = renamed(arch, old_arch, "--codec-arch", "--arch", "mbt2018-mean")
    cfg = CodecTrainConfig(out=out, arch=arch, N=N, M=M, lmbda=lmbda, steps=steps,
                           batch_size=batch_size, patch=patch, lr=lr, seed=seed, threads=threads,
                           init_from=init_from, widen_from=widen_from, source=source, workers=workers,
                           utility=utility,
                           task_source=task_source, lmbda_t=lmbda_t,
                           task_batch_size=task_batch_size, task_patch=task_patch, task_arch=task_arch,
                           task_quantise=task_quantise, task_workers=task_workers, photos=photos,
                           max_side=max_side, synthetic=synthetic, resume=resume, heldout=heldout,
                           heldout_every=heldout_every, save_every=save_every, max_minutes=max_minutes,
                           scales=tuple(float(v) for v in scales.split(",")))
    if ray_workers:
        from jobs.train import run_codec_ray

        res = run_codec_ray(cfg, ray_workers, gpus_per_worker, address)
        if res.error:
            raise TrainError(f"Ray Train failed: {res.error}")
    else:
        from jobs.progress import StepBar

        def show(d: dict) -> None:
            console.print(f"step {d['step']}: loss {d['loss']:.3f} bpp {d['bpp']:.3f} PSNR {d['psnr']:.2f} dB"
                          + (f" task {d['task']:.3f}" if "task" in d else "")
                          + (f" | held out: {d['heldout_bpp']:.3f} bpp {d['heldout_psnr']:.2f} dB"
                             if "heldout_psnr" in d else ""))

        with StepBar("training", steps, console) as advance:
            done = [0]

            def step(k: int) -> None:
                advance(k - done[0])
                done[0] = k

            ck = train_codec(cfg, on_log=show, on_step=step)
        if ck is not None and ck.metadata.get("step", steps) < steps:
            console.print(f"stopped at step {ck.metadata['step']} of {steps} (--max-minutes); the same "
                          "command with --resume goes on")
    console.print(f"wrote {out}")


def integerize_cmd(
    src: str = typer.Argument(..., help="Trained codec checkpoint with a float h_s (hyperprior families)."),
    out: str = typer.Argument(..., help="Checkpoint to write, with an exact integer h_s added."),
    steps: int = typer.Option(1500, help="Rate-only fine-tuning steps after quantisation (0: none)."),
    crops: int = typer.Option(256, help="Calibration / fine-tuning crops of the bundled training photos."),
    lr: float = typer.Option(1e-4), seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="Torch CPU threads (0: default)."),
    output: Path = typer.Option(None, help="Also write the rate-cost figures as JSON here."),
):
    """Give a codec an integer h_s (exact on every machine): quantise, fine-tune, report the rate cost."""
    from pipeline.codec import checkpoint as ckpt_io
    from pipeline.codec.load import codec_from_checkpoint
    from pipeline.codec_train.integerize import (
        IntegerizeConfig,
        integerize,
        photo_tensors,
        rate_costs,
        strip_integer,
        total_cost,
    )

    ck = ckpt_io.read(src)
    cfg = IntegerizeConfig(crops=crops, steps=steps, lr=lr, seed=seed, threads=threads)
    train = [t for _, t in photo_tensors(holdout=False)]
    ick = integerize(ck, train, cfg, on_log=lambda d: console.print(
        f"step {d['step']}: validation {d['val_bits_per_y']:.4f} bits per y element"))
    ckpt_io.save(ick, out)
    fc = codec_from_checkpoint(strip_integer(ck))
    ic = codec_from_checkpoint(ick)
    costs = {held: rate_costs(fc, ic, photo_tensors(holdout=held)) for held in (True, False)}
    t = Table(title=f"rate of the integer h_s against the float64 h_s, same g_a ({ck.arch})")
    for c in ("photo", "set", "bytes float h_s", "bytes integer h_s", "rate cost"):
        t.add_column(c, justify="right" if c.startswith(("bytes", "rate")) else "left")
    summary = {}
    for held, rows in costs.items():
        name = "held out" if held else "training"
        for r in rows:
            t.add_row(r.image, name, f"{r.float_bytes:,}", f"{r.integer_bytes:,}", f"{100 * r.cost:+.2f}%")
        total = total_cost(rows)
        summary[name] = total
        t.add_row(f"[bold]all {name}", "", "", "", f"[bold]{100 * total:+.2f}%")
    console.print(t)
    console.print(f"wrote {out} (integer h_s bounds {ic.entropy.bounds}, all below 2^24: exact in float32)")
    if output:
        output.write_text(json.dumps({"rate_cost": summary, "rows": {
            ("held out" if h else "training"): [r.__dict__ for r in rows] for h, rows in costs.items()}},
            indent=2))
