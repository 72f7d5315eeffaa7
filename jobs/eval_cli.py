"""`latents eval rd | utility | downstream | cost`: what a codec buys, against JPEG, WebP and AVIF,
and what its latents are worth to classifiers, detectors and segmenters against pixels."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from jobs.console import App, console, int_list, renamed
from jobs.train_cli import DETECTOR, detector
from pipeline.errors import ConfigError

eval_app = App(no_args_is_help=True, help="Prove what a codec buys: rate–distortion against JPEG/WebP/AVIF.")


@eval_app.command("rd")
def eval_rd(
    checkpoint: list[str] = typer.Option(None, "--checkpoint", "-c",
                                         help="Codec checkpoint(s), one curve point each (default: "
                                         "the bundled rate ladder, bundled:lowest-rate … "
                                         "bundled:high-rate)."),
    arch: str = typer.Option(None, "--codec-arch", help="Codec architecture, for CompressAI state dicts."),
    old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --codec-arch."),
    images: Path = typer.Option(None, help="A folder of images, e.g. Kodak (default: the 12 held-out "
                                "wallpaper photographs in data/photos/heldout from `make photos`, else "
                                "the 2 held-out bundled photos)."),
    all_photos: bool = typer.Option(False, help="Every bundled colour photo, not only the held-out ones."),
    baseline: list[str] = typer.Option(None, help="Other codec(s) to compare at their own rate: the "
                                       "curve's PSNR at the same bpp (e.g. bundled:mbt2018-mean)."),
    plot: Path = typer.Option(None, help="Write the rate–distortion plot (PNG) here."),
    output: Path = typer.Option(None, help="Also write every figure as JSON here."),
    results_dir: Path = typer.Option(None, help="Write one JSON per curve here in CompressAI's results "
                                     "layout (python -m compressai.utils.plot --results-file DIR/*.json)."),
):
    """bpp (real bitstream bytes), PSNR and MS-SSIM of codecs beside JPEG, WebP and AVIF (Pillow):
    per image at equal bpp, then the curve over the codecs' rates with BD-rates."""
    import numpy as np

    from jobs.progress import StepBar
    from pipeline.codec.load import BUNDLED_CURVE, CodecSpec, bundled_present, load_codec
    from pipeline.eval.rd import (
        evaluate_codecs,
        load_folder,
        load_rgb,
        plot_curves,
        worst_against_jpeg,
        write_compressai_results,
    )
    from pipeline.tasks.photos import bundled_photos

    specs = checkpoint or [f"bundled:{n}" for n in BUNDLED_CURVE if bundled_present(n)]
    arch = renamed(arch, old_arch, "--codec-arch", "--arch")
    codecs = {c: load_codec(CodecSpec(checkpoint=c, arch=arch)) for c in specs}
    others = {b: load_codec(CodecSpec(checkpoint=b)) for b in baseline or []}
    from pipeline.tasks.wallpapers import DEFAULT_DEST, HELDOUT

    if images is None and not all_photos and (DEFAULT_DEST / HELDOUT).is_dir():
        images = DEFAULT_DEST / HELDOUT
    if images is None and not all_photos:
        console.print(f"the 2 held-out bundled photos; `make photos` builds the 12-photo held-out set in "
                      f"{DEFAULT_DEST / HELDOUT}")
    pictures = load_folder(images) if images else [
        (p.name, load_rgb(p.path)) for p in bundled_photos(colour_only=True) if all_photos or p.holdout]
    name = "latent-shards " + ", ".join(sorted({c.identity.arch for c in codecs.values()}))
    with StepBar("evaluating", len(pictures) * (1 + len(codecs) + len(others)), console) as advance:
        rep = evaluate_codecs(codecs, pictures, name, others, on_step=lambda what: advance(1, what))
    t = Table(title="codecs vs JPEG/WebP at equal bpp (PSNR interpolated over their quality range)")
    for c in ("codec", "image", "bpp", "PSNR codec", "MS-SSIM", "PSNR JPEG", "PSNR WebP", "JPEG min bpp"):
        t.add_column(c)
    for spec, rows in rep.points.items():
        for p in rows:
            t.add_row(spec, p.image, f"{p.codec_bpp:.3f}", f"{p.codec_psnr:.2f}", f"{p.codec_msssim:.4f}",
                      f"{p.jpeg_psnr_at_bpp:.2f}", f"{p.webp_psnr_at_bpp:.2f}", f"{p.jpeg_min_bpp:.3f}")
        m = rep.means[spec]
        t.add_row(spec, "[bold]mean", f"{m['codec_bpp']:.3f}", f"{m['codec_psnr']:.2f}",
                  f"{m['codec_msssim']:.4f}", f"{m['jpeg_psnr_at_bpp']:.2f}",
                  f"{m['webp_psnr_at_bpp']:.2f}", "")
        w = worst_against_jpeg(rows)
        if w is not None:
            t.add_row(spec, f"[bold]worst: {w.image}", f"{w.codec_bpp:.3f}", f"{w.codec_psnr:.2f}",
                      f"{w.codec_msssim:.4f}", f"{w.jpeg_psnr_at_bpp:.2f}", f"{w.webp_psnr_at_bpp:.2f}",
                      f"{w.codec_psnr - w.jpeg_psnr_at_bpp:+.2f} dB")
    console.print(t)
    c = Table(title=f"curve over {len(pictures)} image(s): mean bpp, PSNR and MS-SSIM per rate point")
    for col in ("point", "bpp", "PSNR", "MS-SSIM"):
        c.add_column(col, justify="left" if col == "point" else "right")
    for spec, (b, q), ms in zip(rep.members, rep.curve.points(), rep.curve.msssim, strict=True):
        c.add_row(spec, f"{b:.3f}", f"{q:.2f}", f"{ms:.4f}")
    for k, v in rep.bd_rate.items():
        c.add_row(f"BD-rate against {k} (PSNR)", "" if np.isnan(v) else f"{v:+.1f}%", "", "")
    for spec, a in rep.at_baselines.items():
        mine = a["curve_psnr_at_bpp"]
        c.add_row(f"{spec} (baseline)", f"{a['bpp']:.3f}", f"{a['psnr']:.2f}", "")
        c.add_row("  the curve at that bpp", f"{a['bpp']:.3f}",
                  "outside the curve" if np.isnan(mine) else f"{mine:.2f} ({mine - a['psnr']:+.2f} dB)", "")
    console.print(c)
    if plot:
        where = images.name if images else "all colour photos" if all_photos else "held-out photos"
        plot_curves(rep.curves, plot, f"{where} ({len(pictures)})")
        console.print(f"wrote {plot}")
    if output:
        output.write_text(json.dumps(rep.to_json(), indent=2))
    if results_dir:
        paths = write_compressai_results(rep.curves, results_dir)
        console.print(f"wrote {len(paths)} CompressAI results file(s) to {results_dir}")


def codec_groups(codec: list[str]) -> dict[str, list[str]]:
    """``--codec NAME=CHECKPOINT`` options, grouped by NAME in the order given."""
    groups: dict[str, list[str]] = {}
    for c in codec:
        name, sep, ck = c.partition("=")
        if not sep or not name or not ck:
            raise ConfigError(f"--codec takes NAME=CHECKPOINT, got {c!r}")
        groups.setdefault(name, []).append(ck)
    return groups


@eval_app.command("utility")
def eval_utility(
    source: Path = typer.Option(..., help="Labelled images with train/ and val/ class folders "
                                "(e.g. `latents make-task`)."),
    codec: list[str] = typer.Option(..., help="NAME=CHECKPOINT, repeated: one rate point each, grouped by "
                                    "NAME (e.g. rd=bundled:low-rate rd=bundled:default task=task.pt)."),
    work: Path = typer.Option(Path("runs/eval-utility"), help="Folder for datasets, JPEG copies and runs."),
    seeds: int = typer.Option(3), epochs: int = typer.Option(10), batch_size: int = typer.Option(32),
    lr: float = typer.Option(0.05), window: int = typer.Option(6, help="Latent crop; pixels use 16x."),
    workers: int = typer.Option(2, help="DataLoader workers."),
    cost_batch: int = typer.Option(32, help="Batch of the per-step training cost comparison."),
    jpeg_match: str = typer.Option(None, help="The codec NAME whose rates JPEG is matched to (default: "
                                   "the first --codec; 'all': every codec)."),
    plot: Path = typer.Option(None, help="Write the accuracy-vs-bpp plot (PNG) here."),
    output: Path = typer.Option(None, help="Write every figure as JSON here."),
    policy: str = typer.Option(None, "--augment", help="One augmentation policy for every arm (usual, "
                               "window, scale, members; see `latents train classify --help`)."),
    scale_aug: str = typer.Option(None, help="The region's area fraction LOW,HIGH under --augment scale."),
    aspect: str = typer.Option("0.75,1.3333", help="The region's aspect range under --augment scale."),
    resample: str = typer.Option("nearest", help="ŷ under --augment scale: nearest, bilinear or area."),
    members: str = typer.Option("1,0.75,0.5", help="The scales --augment members draws among (each codec's "
                                "conversion then encodes them all)."),
):
    """The seed's Table 1 on any labelled source: classifier top-1/top-5 on each codec's ŷ, on
    JPEG pixels at the matched bpp, and on the original pixels (mean ± std over seeds)."""
    from jobs.train_cli import augment
    from pipeline.eval.utility import UtilityConfig, evaluate_utility, plot_utility, save

    cfg = UtilityConfig(str(source), codec_groups(codec), str(work), seeds, epochs, batch_size, lr, window,
                        workers=workers, cost_batch=cost_batch, jpeg_match=jpeg_match,
                        augment=augment(policy, scale_aug, aspect, resample, members))
    result = evaluate_utility(cfg, on_row=lambda r: console.print(
        f"{r.method} {r.checkpoint or ''}: bpp {r.bpp if r.bpp is not None else '-'} top-1 "
        f"{sum(r.top1) / len(r.top1):.3f}"))
    t = Table(title=f"downstream classification on {source} ({seeds} seed(s), {epochs} epoch(s) each)")
    for col in ("method", "rate point", "bpp", "top-1", "top-5"):
        t.add_column(col)
    for r in result["rows"]:
        bpp = "-" if r["bpp"] is None else f"{r['bpp']:.3f}"
        if r.get("target_bpp") is not None and abs(r["bpp"] - r["target_bpp"]) > 0.25 * r["target_bpp"]:
            bpp += f" (asked {r['target_bpp']:.3f}: JPEG's nearest)"
        t.add_row(r["method"], str(r["checkpoint"] or "-"), bpp,
                  f"{r['top1_mean']:.3f} ± {r['top1_std']:.3f}",
                  f"{r['top5_mean']:.3f} ± {r['top5_std']:.3f}")
    console.print(t)
    t = Table(title="the same runs at equal training time: top-1 when the quickest row had trained")
    for col in ("method", "rate point", "bpp", "top-1", "seeds", "budget s", "its own s"):
        t.add_column(col)
    for r, full in zip(result["equal_time"], result["rows"], strict=True):
        top1 = "-" if r["mean"] is None else f"{r['mean']:.3f} ± {r['std']:.3f}"
        t.add_row(r["method"], str(r["checkpoint"] or "-"), "-" if r["bpp"] is None else f"{r['bpp']:.3f}",
                  top1, f"{r['n']}/{len(r['values'])}", f"{sum(r['budget_s']) / len(r['budget_s']):.0f}",
                  f"{full['seconds_mean']:.0f}")
    console.print(t)
    c = result["step_cost"]
    t = Table(title=f"training cost: one SGD step at batch {c['batch']} (this CPU), forward GFLOPs per image")
    for col in ("model", "input", "step ms", "GFLOPs", "of which stem"):
        t.add_column(col)
    for r in c["rows"]:
        t.add_row(r["model"], r["input"], f"{r['ms']:.1f}", f"{r['gflops']:.3f}", f"{r['stem_gflops']:.3f}")
    console.print(t)
    if plot:
        plot_utility(result, plot, f"{source.name}: val top-1 against bpp")
        console.print(f"wrote {plot}")
    if output:
        save(result, output)


@eval_app.command("downstream")
def eval_downstream(
    source: str = typer.Option(..., help="A detection source with train and val splits (voc, coco; "
                               "e.g. `latents make-task --detection`)."),
    codec: list[str] = typer.Option(["rd=bundled:default"], help="NAME=CHECKPOINT, repeated: one ŷ arm "
                                    "each."),
    work: Path = typer.Option(Path("runs/eval-downstream"), help="Folder for datasets, runs and tables; "
                              "finished runs are read back."),
    task: list[str] = typer.Option(["detect", "segment"], help="detect and/or segment (repeatable)."),
    init: list[str] = typer.Option(["scratch"], help="scratch and/or pretrained (repeatable)."),
    init_latent: str = typer.Option(None, help="With --init pretrained: a classifier's model.pt on ŷ."),
    init_pixels: str = typer.Option(None, help="With --init pretrained: a classifier's model.pt on pixels."),
    seeds: int = typer.Option(3), epochs: int = typer.Option(8), batch_size: int = typer.Option(8),
    lr: float = typer.Option(0.02), window: int = typer.Option(12, help="Latent cells; pixels use 16x."),
    workers: int = typer.Option(2, help="DataLoader workers."),
    fewshot: str = typer.Option(None, help="A fewshot.json naming novel classes: also TFA few-shot "
                                "detection on every arm."),
    shots: str = typer.Option("1,5,10"), fewshot_seeds: int = typer.Option(2),
    finetune_steps: int = typer.Option(100),
    policy: str = typer.Option(None, "--augment", help="One augmentation policy for every arm (usual, "
                               "window, scale, members; see `latents train classify --help`)."),
    scale_aug: str = typer.Option(None, help="The region's area fraction LOW,HIGH under --augment scale."),
    aspect: str = typer.Option("0.75,1.3333", help="The region's aspect range under --augment scale."),
    resample: str = typer.Option("nearest", help="ŷ under --augment scale: nearest, bilinear or area."),
    members: str = typer.Option("1,0.75,0.5", help="The scales --augment members draws among."),
    roi_batch: int = DETECTOR["roi_batch"], fpn_from: int = DETECTOR["fpn_from"],
    anchors: str = DETECTOR["anchors"],
    output: Path = typer.Option(None, help="Write every figure as JSON here."),
):
    """Detection AP50, segmentation mIoU and few-shot detection from each codec's ŷ against the
    pixels it replaces: mean ± std over seeds, at equal epochs and at equal training time."""
    from jobs.train_cli import augment
    from pipeline.eval.downstream import DownstreamConfig, evaluate_downstream, save

    cfg = DownstreamConfig(source, str(work), codec_groups(codec), tuple(task), tuple(init), init_latent,
                           init_pixels, seeds, epochs, batch_size, lr, window, workers,
                           augment(policy, scale_aug, aspect, resample, members),
                           **detector(roi_batch, fpn_from, anchors), fewshot=fewshot,
                           shots=int_list(shots, "--shots"), fewshot_seeds=fewshot_seeds,
                           finetune_steps=finetune_steps)
    result = evaluate_downstream(cfg, on_line=console.print)
    print_downstream(result, source, seeds, epochs)
    if output:
        save(result, output)


def print_downstream(result: dict, source: str, seeds: int, epochs: int) -> None:
    """The equal-epoch table, the equal-time table and the few-shot table."""
    def cell(mean, std) -> str:
        return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"

    for title, rows, extra in (
            (f"downstream on {source}: {seeds} seed(s), {epochs} epoch(s) each", result["rows"], "train s"),
            ("the same runs at equal training time (seed by seed, the quickest arm's wall clock)",
             result["equal_time"], "budget s")):
        if not rows:
            continue
        t = Table(title=title)
        for col in ("task", "start", "input", "bpp", "metric", "mean ± std", "seeds", extra):
            t.add_column(col)
        for r in rows:
            seconds = r["seconds"] if "seconds" in r else r["budget_s"]
            t.add_row(r["task"], r["init"], r["arm"], f"{r['bpp']:.3f}", r["metric"],
                      cell(r["mean"], r["std"]), f"{r.get('n', len(r['values']))}/{len(r['values'])}",
                      f"{sum(seconds) / len(seconds):.0f}")
        console.print(t)
    for fs in result["fewshot"]:
        t = Table(title=f"few-shot detection, {fs['arm']} ({fs['init']} trunk): AP50 mean ± std")
        for col in ("k", "novel", "base"):
            t.add_column(col)
        for row in fs["table"]:
            t.add_row(str(row["k"]), cell(row["novel_ap50_mean"], row["novel_ap50_std"]),
                      cell(row["base_ap50_mean"], row["base_ap50_std"]))
        console.print(t)


@eval_app.command("cost")
def eval_cost(
    sustained_tflops: float = typer.Option(40.0, help="TFLOP/s one GPU sustains in training (FP32/TF32)."),
    joint_epochs: int = typer.Option(70, help="Epochs of the task set in joint codec training (seed: 70)."),
    downstream_epochs: int = typer.Option(90, help="Epochs of the classifier trained on ŷ."),
    N: int = typer.Option(128, "--N"), M: int = typer.Option(192, "--M"),
    head: str = typer.Option("sresnet50", help="The classifier on ŷ (and the task head)."),
    output: Path = typer.Option(None, help="Also write the figures as JSON here."),
):
    """The seed's setting (codec on Open Images jointly with ImageNet classification, then a
    classifier on ŷ): FLOPs of each stage and GPU-hours at a stated sustained throughput."""
    from pipeline.eval.cost import SeedSchedule, seed_cost

    r = seed_cost(SeedSchedule(joint_epochs=joint_epochs, downstream_epochs=downstream_epochs, N=N, M=M,
                               head=head, sustained_tflops=sustained_tflops))
    t = Table(title=f"forward GFLOPs per image (bmshj2018-hyperprior N={N} M={M})")
    t.add_column("what"), t.add_column("GFLOPs", justify="right")
    for k, v in r["gflops_per_image"].items():
        t.add_row(k, f"{v:.2f}")
    console.print(t)
    t = Table(title=f"stages: PFLOPs and GPU-hours at {sustained_tflops:g} TFLOP/s sustained "
                    f"({r['joint_steps']:,} joint steps)")
    for c in ("stage", "PFLOPs", "GPU-hours"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for k, v in r["pflops"].items():
        t.add_row(k, f"{v:,.0f}", f"{r['gpu_hours'][k]:,.1f}")
    console.print(t)
    console.print("convolution and matrix FLOPs only (no element-wise work, no data loading): a floor "
                  "for a well-fed GPU; entropy coding during conversion runs on CPUs")
    if output:
        output.write_text(json.dumps(r, indent=2))
