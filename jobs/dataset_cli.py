"""`latents inspect`, `verify`, `decode` and `demo`: looking at a latent dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from jobs.console import console, err, print_summary


def inspect(root: str = typer.Argument(..., help="Latent dataset root."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Samples, shards, bytes, bpp mean/p50/p95, storage ratio and failures by reason."""
    from pipeline.shards.dataset import LatentDataset, summarize

    s = summarize(LatentDataset.open(root))
    if as_json:
        print(json.dumps(s, indent=2))
    else:
        print_summary(s)


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


def demo(out: Path = typer.Argument(Path("demo-out"), help="Folder for the demo's outputs.")):
    """Convert the bundled photos with the default codec; print the table; write a PNG sheet."""
    from jobs.convert_cli import run_convert
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
