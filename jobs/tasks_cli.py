"""`latents make-task` and `latents bench`: the CPU-sized tasks and the side-by-side figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.console import console, renamed


def make_task(out: Path = typer.Argument(..., help="Folder for the task's JPEGs."),
              kind: str = typer.Option("photo-crops", help="photo-crops (12 colour photos), tiles (72 "
                                       "classes: 2x2 tiles of all 18 photos, for pretraining a trunk) or "
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


def fetch_photos(dest: Path = typer.Argument(Path("data/photos"), help="Folder for the packages and the "
                                            "photo sets (not committed).")):
    """Fetch Debian's wallpaper photographs (apt-get download, dpkg -x) and build DEST/train
    (codec training), DEST/heldout (Kodak-sized, for `latents eval rd` only) and DEST/photos.json
    (each file's package, version and licence)."""
    from pipeline.tasks.wallpapers import build_photo_sets, fetch_packages

    versions = fetch_packages(dest)
    m = build_photo_sets(dest, versions)
    n = {r: sum(1 for p in m["photos"] if p["role"] == r) for r in ("train", "heldout")}
    console.print(f"{n['train']} training photographs in {dest}/train, {n['heldout']} held-out ones "
                  f"(768x512) in {dest}/heldout, from {', '.join(f'{k} {v}' for k, v in versions.items())}; "
                  f"each file's licence in {dest}/photos.json")


def bench(
    checkpoint: str = typer.Option(None, help="Codec checkpoint (default: the bundled codec)."),
    arch: str = typer.Option(None, "--codec-arch", help="Codec architecture, for a CompressAI state dict."),
    old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --codec-arch."),
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
    arch = renamed(arch, old_arch, "--codec-arch", "--arch")
    figures = run_bench(CodecSpec(checkpoint=checkpoint, arch=arch), threads,
                        images if pipeline_figures else 0, workers,
                        source if pipeline_figures else None, epochs, batch_size, cache_dir)
    for table in bench_tables(figures, threads, workers):
        console.print(table)
    if output:
        output.write_text(json.dumps(figures, indent=2))
