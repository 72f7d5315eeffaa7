"""The `latents` command line: thin wrappers that build configs and call importable functions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from jobs.cache_cli import cache_app
from jobs.console import App, console, err, print_fewshot, print_summary
from jobs.convert import convert
from jobs.detect_cli import add_commands as add_detect_commands
from jobs.detect_cli import add_fewshot_detect
from jobs.eval_cli import eval_app

app = App(add_completion=False, no_args_is_help=True,
                  help="Image corpora → learned-compression latent shards, and back.")
app.command()(convert)


@app.command()
def inspect(root: str = typer.Argument(..., help="Latent dataset root."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Samples, shards, bytes, bpp mean/p50/p95, storage ratio and failures by reason."""
    from pipeline.shards.dataset import LatentDataset, summarize

    s = summarize(LatentDataset.open(root))
    if as_json:
        print(json.dumps(s, indent=2))
    else:
        print_summary(s)


@app.command()
def verify(root: str = typer.Argument(..., help="Latent dataset root."),
           sample: int = typer.Option(None, help="Decode only this many random samples."),
           seed: int = typer.Option(0, help="Seed for --sample.")):
    """Check shard checksums, the codec fingerprint and that every latent decodes."""
    from pipeline.shards.verify import verify as run_verify

    rep = run_verify(root, sample, seed)
    for f in rep.faults:
        err.print(f"[red]FAULT[/] shard={f.shard} key={f.key or '-'}: {f.problem}")
    console.print(f"{rep.shards} shard(s), {rep.decoded} latent(s) decoded, {len(rep.faults)} fault(s)")
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
def decode(root: str = typer.Argument(..., help="Latent dataset root."),
           key: str = typer.Argument(..., help="Sample key (see index.parquet)."),
           output: Path = typer.Option(..., "-o", "--output", help="PNG to write.")):
    """Reconstruct one sample's pixels with the dataset's codec (g_s), for a human look."""
    from PIL import Image

    from pipeline.shards.dataset import LatentDataset

    ds = LatentDataset.open(root)
    x = ds.load_codec().reconstruct(ds.latent_bytes(key))
    arr = x.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(output)
    console.print(f"wrote {output} ({arr.shape[1]}x{arr.shape[0]})")


@app.command()
def demo(out: Path = typer.Argument(Path("demo-out"), help="Folder for the demo's outputs.")):
    """Convert the bundled photos with the default codec; print the table; write a PNG sheet."""
    from jobs.convert import run_convert
    from jobs.demo import contact_sheet, materialize_photos
    from pipeline.convert import ConvertJob, ConvertOptions
    from pipeline.shards.dataset import LatentDataset, summarize

    t0 = time.perf_counter()
    dataset = str(out / "dataset")
    opts = ConvertOptions(shard_size=8)
    src = materialize_photos(out / "source")
    s = run_convert(ConvertJob(str(src), dataset, options=opts, command=("latents", "demo", str(out))),
                    "local", console=console, progress=True)
    print_summary(summarize(LatentDataset.open(dataset)))
    png = contact_sheet(dataset, out / "reconstructions.png", opts.policy)
    console.print(f"{s.images_per_s:.1f} images/s; originals above reconstructions: {png}")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")


@app.command("train-codec")
def train_codec_cmd(
    out: str = typer.Argument(..., help="Checkpoint to write (latent-shards format)."),
    arch: str = typer.Option("mbt2018-mean"), N: int = typer.Option(64), M: int = typer.Option(96),
    lmbda: float = typer.Option(0.013, help="Rate–distortion trade-off λ_d (λ_d·255²·MSE + bpp)."),
    steps: int = typer.Option(15300), batch_size: int = typer.Option(8),
    patch: int = typer.Option(128), lr: float = typer.Option(3e-4), seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="Torch CPU threads (0: default)."),
    init_from: str = typer.Option(None, help="Start from this checkpoint's tensors where names "
                                  "and shapes match (e.g. a scale-only codec from a mean-scale one)."),
    source: str = typer.Option(None, help="Train on crops of this source (any layout `convert` reads, "
                               "local or fsspec; its train split) instead of the bundled photos."),
    workers: int = typer.Option(2, help="With --source: DataLoader workers decoding and cropping."),
    utility: str = typer.Option(None, help="classify: also train a task head on ŷ (Eq. 6, "
                                "R + λ_d·D + λ_t·L_task); needs --task-source."),
    task_source: str = typer.Option(None, help="Labelled class-per-folder images for the task "
                                    "(a tree, or its train/ split; e.g. `latents make-task`)."),
    lmbda_t: float = typer.Option(10.0, help="Weight λ_t of the task loss."),
    task_batch_size: int = typer.Option(16, help="Task batch, drawn apart from the reconstruction batch."),
    task_patch: int = typer.Option(64, help="Task crop side (a multiple of 64)."),
    task_arch: str = typer.Option("sresnet18", help="The head on ŷ (sresnet*, cresnet*)."),
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

    cfg = CodecTrainConfig(out=out, arch=arch, N=N, M=M, lmbda=lmbda, steps=steps,
                           batch_size=batch_size, patch=patch, lr=lr, seed=seed, threads=threads,
                           init_from=init_from, source=source, workers=workers, utility=utility,
                           task_source=task_source, lmbda_t=lmbda_t,
                           task_batch_size=task_batch_size, task_patch=task_patch, task_arch=task_arch,
                           task_quantise=task_quantise, task_workers=task_workers)
    if ray_workers:
        from jobs.train import run_codec_ray

        res = run_codec_ray(cfg, ray_workers, gpus_per_worker, address)
        if res.error:
            raise OSError(f"Ray Train failed: {res.error}")
    else:
        train_codec(cfg, on_log=lambda d: console.print(
            f"step {d['step']}: loss {d['loss']:.3f} bpp {d['bpp']:.3f} PSNR {d['psnr']:.2f} dB"
            + (f" task {d['task']:.3f}" if "task" in d else "")))
    console.print(f"wrote {out}")


@app.command("integerize")
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


app.add_typer(eval_app, name="eval")


train_app = App(no_args_is_help=True, help="Train models straight from latent shards.")
app.add_typer(train_app, name="train")
add_detect_commands(train_app)


@train_app.command("classify")
def train_classify(
    data: str = typer.Option(..., help="Latent dataset root (or an image root with --pixels)."),
    arch: str = typer.Option("sresnet18", help="sresnet18/34/50/101, cresnet*, resnet* (pixels)."),
    epochs: int = typer.Option(10), batch_size: int = typer.Option(32), lr: float = typer.Option(0.05),
    window: int = typer.Option(14, help="Latent crop side (14 = 224 px); pixels use 16x this."),
    workers: int = typer.Option(2, help="DataLoader worker processes (ŷ decoding runs there)."),
    pixels: bool = typer.Option(False, help="Baseline: train on the JPEG source images instead."),
    out: str = typer.Option("runs/classify", help="Folder for checkpoint.pt and metrics.jsonl."),
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
):
    """Classification on ŷ (or pixels): top-1/top-5 on the val split each epoch, JSON-lines metrics."""
    from jobs.train import run_local, run_ray
    from pipeline.train.data import InputSpec
    from pipeline.train.loop import TrainConfig

    spec = InputSpec(data, "pixels" if pixels else "latent", (window, window), batch_size, workers, seed,
                     cache, int(cache_gb * 2**30))
    cfg = TrainConfig(spec, arch=arch, epochs=epochs, lr=lr, out=out, seed=seed,
                      checkpoint_every=checkpoint_every, resume=resume)
    if resume and Path(out, "last.pt").is_file():
        console.print(f"resuming from {out}/last.pt")

    def show(r: dict) -> None:
        console.print(f"epoch {r['epoch']}: loss {r['train_loss']:.3f} train {r['train_acc']:.3f} "
                      f"val top-1 {r['val_top1']:.3f} top-5 {r['val_top5']:.3f} "
                      f"({r['samples_per_s']:.1f} samples/s)")

    if ray_workers:
        res = run_ray(cfg, ray_workers, use_gpu, address)
        if res.error:
            raise OSError(f"Ray Train failed: {res.error}")
    else:
        run_local(cfg, show)
    console.print(f"checkpoint and metrics in {out}/")


app.add_typer(cache_app, name="cache")


fewshot_app = App(no_args_is_help=True, help="TFA two-stage few-shot learning from ŷ: classify or detect.")
app.add_typer(fewshot_app, name="fewshot")
add_fewshot_detect(fewshot_app)


def novel_names(novel: str | None, split_file: Path | None) -> tuple[str, ...]:
    """The novel classes from --novel (comma-separated) or --split-file (a fewshot.json)."""
    if split_file:
        return tuple(json.loads(split_file.read_text())["novel"])
    if novel:
        return tuple(n.strip() for n in novel.split(",") if n.strip())
    raise ValueError("name the novel classes with --novel or --split-file")


@fewshot_app.command("classify")
def fewshot(
    data: str = typer.Option(..., help="Latent dataset root with train and val splits."),
    novel: str = typer.Option(None, help="Comma-separated novel class names."),
    split_file: Path = typer.Option(None, help="A fewshot.json (from make-task) naming the novel classes."),
    arch: str = typer.Option("sresnet18"), base_epochs: int = typer.Option(10),
    lr: float = typer.Option(0.05), batch_size: int = typer.Option(32),
    window: int = typer.Option(14), workers: int = typer.Option(2),
    shots: str = typer.Option("1,2,3,5,10"), seeds: int = typer.Option(3),
    classifier: str = typer.Option("cosine", help="cosine or linear last layer."),
    output: Path = typer.Option(Path("runs/fewshot.json"), help="Where the table is written as JSON."),
):
    """TFA two-stage few-shot: base training, then last-layer fine-tuning on k shots per class."""
    from pipeline.train.data import InputSpec
    from pipeline.train.fewshot import FewShotConfig, run_fewshot

    cfg = FewShotConfig(InputSpec(data, window=(window, window), batch_size=batch_size, workers=workers),
                        novel_names(novel, split_file), arch=arch, base_epochs=base_epochs, lr=lr,
                        shots=tuple(int(k) for k in shots.split(",")), seeds=tuple(range(seeds)),
                        classifier=classifier)
    r = run_fewshot(cfg, log=lambda d: console.print(
        f"base epoch {d['epoch']}: val top-1 (base classes) {d['val_top1']:.3f}"))
    rows = [(row["shots"], row["novel_mean"], row["novel_std"], row["base_mean"], row["base_std"])
            for row in r["rows"]]
    print_fewshot(f"{arch} few-shot ({classifier} head), {len(cfg.seeds)} seeds: accuracy over all classes",
                  rows, r, output)


@app.command("make-task")
def make_task(out: Path = typer.Argument(..., help="Folder for the task's JPEGs."),
              kind: str = typer.Option("photo-crops", help="photo-crops (12 colour photos) or "
                                       "grey-textures (18 photos in grey, small turned crops: harder)."),
              train_per_class: int = typer.Option(None, help="Train crops per class (default 40)."),
              val_per_class: int = typer.Option(None, help="Val crops per class (default 10)."),
              size: int = typer.Option(None, help="Crop side in px (default 128)."),
              seed: int = typer.Option(0),
              detection: bool = typer.Option(False, "--detection", help="VOC-layout detection and "
                                             "segmentation scenes instead (objects cut from the colour "
                                             "photos pasted on grey textures; exact boxes and masks)."),
              train_scenes: int = typer.Option(160, help="With --detection: train scenes."),
              val_scenes: int = typer.Option(40, help="With --detection: val scenes.")):
    """Build a CPU-sized labelled task from the bundled photos (classes = photos; base/novel split)."""
    from pipeline.tasks.classification import make_photo_task, task_recipe

    if detection:
        from pipeline.tasks.scenes import SceneTask, make_scene_task

        meta = make_scene_task(out, SceneTask(train=train_scenes, val=val_scenes, seed=seed))
        c = meta["counts"]
        console.print(f"{train_scenes} train and {val_scenes} val scenes in {out}/VOC2007: {c['objects']} "
                      f"objects ({c['difficult']} difficult, {c['truncated']} truncated), {c['empty']} "
                      f"empty scenes, {len(meta['classes'])} classes; novel: {', '.join(meta['novel'])}")
        return

    meta = make_photo_task(out, task_recipe(kind, train_per_class=train_per_class,
                                            val_per_class=val_per_class, size=size, seed=seed))
    console.print(f"{kind}: {len(meta['classes'])} classes in {out}/train and {out}/val; "
                  f"few-shot novel classes: {', '.join(meta['novel'])}")


@app.command()
def bench(
    checkpoint: str = typer.Option(None, help="Codec checkpoint (default: the bundled codec)."),
    arch: str = typer.Option(None),
    threads: int = typer.Option(1, help="Torch threads for the per-stage profiles."),
    pipeline_figures: bool = typer.Option(True, "--pipeline/--no-pipeline",
                                          help="Also time convert (bare/local/Ray) and the loaders."),
    images: int = typer.Option(384, help="Generated ImageNet-like JPEGs (500x375) for those figures."),
    source: str = typer.Option(None, help="A class-per-folder image tree instead of generated images."),
    workers: int = typer.Option(2, help="Cores / DataLoader workers for those figures."),
    batch_size: int = typer.Option(32, help="DataLoader batch size for both loaders."),
    epochs: int = typer.Option(3, help="Timed epochs per loader (after a warm-up epoch); medians."),
    cache_dir: str = typer.Option(None, help="Put the warm cache here (default: the temp folder)."),
    plan_rows: int = typer.Option(0, help="Only this: plan a synthetic URI list of this many rows "
                                  "(10 Parquet files) and print the planning process's peak RSS."),
    output: Path = typer.Option(None, help="Also write the figures as JSON here."),
):
    """Encode/decode profiles; convert, storage and loader figures (cold and warm), side by side."""
    from jobs.bench import bench_tables, run_bench
    from pipeline.codec.load import CodecSpec

    if plan_rows:
        import tempfile

        from pipeline.eval.plan_footprint import measure, write_synthetic_list

        with tempfile.TemporaryDirectory() as tmp:
            figures = {"plan": measure(str(write_synthetic_list(Path(tmp) / "list", plan_rows)))}
        console.print(f"planned {figures['plan']['rows']:,} rows into {figures['plan']['shards']:,} shards "
                      f"in {figures['plan']['seconds']} s; peak RSS {figures['plan']['peak_rss_mib']} MiB "
                      f"({figures['plan']['rss_before_mib']} MiB before planning)")
        if output:
            output.write_text(json.dumps(figures, indent=2))
        return
    figures = run_bench(CodecSpec(checkpoint=checkpoint, arch=arch), threads,
                        images if pipeline_figures else 0, workers,
                        source if pipeline_figures else None, epochs, batch_size, cache_dir)
    for table in bench_tables(figures, threads, workers):
        console.print(table)
    if output:
        output.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    app()
