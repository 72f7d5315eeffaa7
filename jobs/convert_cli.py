"""`latents convert`: the command, wired to `pipeline.convert.convert_dataset`.

The library owns the conversion; this module only picks the executor (the Ray actor pool of
``jobs.ray_convert`` by default, or the library's in-process one) and draws the bar. It is
also runnable as ``python -m jobs.convert_cli SRC OUT [options]``, e.g. under ``ray job submit``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from jobs.console import console, print_summary, renamed
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from jobs.ray_convert import RayOptions
    from pipeline.convert import ConvertJob, ConvertSummary, Executor


def run_convert(job: ConvertJob, executor: str | Executor = "ray", ray: RayOptions | None = None,
                console: Console | None = None, progress: bool = False) -> ConvertSummary:
    """`convert_dataset` on the named executor ("ray": an actor pool, embedded unless
    ``ray.address``; "local": in this process), with a live bar when ``progress``."""
    from jobs.progress import ConvertBar
    from pipeline.convert import LocalExecutor, convert_dataset

    if executor == "ray":
        from jobs.ray_convert import RayExecutor  # Ray is imported only when asked for

        executor = RayExecutor(ray)
    elif executor == "local":
        executor = LocalExecutor()
    elif isinstance(executor, str):
        raise ConfigError(f"unknown executor {executor!r}; choose ray or local")
    with ConvertBar(console, progress) as bar:
        return convert_dataset(job, executor, bar)


def convert(
    src: str = typer.Argument(..., help="Image dataset root (local path or fsspec URL)."),
    out: str = typer.Argument(..., help="Output dataset root (local path or fsspec URL)."),
    fmt: str = typer.Option("auto", "--format",
                            help="Source layout: auto, imagefolder, imagenet, openimages, uris."),
    split: str = typer.Option(None, help="Only this split (default: every split; a plain folder is train)."),
    checkpoint: str = typer.Option(None, help="Codec checkpoint (latent-shards or CompressAI state dict)."),
    arch: str = typer.Option(None, "--codec-arch",
                             help="Codec architecture, for a CompressAI state dict or --pretrained."),
    old_arch: str = typer.Option(None, "--arch", hidden=True, help="Deprecated: --codec-arch."),
    quality: int = typer.Option(None, help="Zoo quality 1..8, with --pretrained."),
    pretrained: bool = typer.Option(False, help="Fetch CompressAI zoo weights (needs network)."),
    size: int = typer.Option(256, help="Resize the shorter side to this (0 keeps the size)."),
    crop: bool = typer.Option(False, help="Centre-crop to size x size after resizing."),
    scales: str = typer.Option("", help="Also encode each image at these fractions of its size "
                               "(e.g. 0.75,0.5): extra tar members that `--augment members` draws one of "
                               "per epoch."),
    min_side: int = typer.Option(16, help="Reject images whose shorter side is below this."),
    max_pixels: int = typer.Option(50_000_000, help="Reject images declaring more pixels (bombs)."),
    shard_size: int = typer.Option(1000, help="Samples per shard."),
    order: str = typer.Option(None, help="hashed (default for a new OUT: keys ordered by their SHA-256, "
                              "classes mixed in every shard) or sorted (by key); a resume keeps the "
                              "order OUT was started with. URI lists keep the list's own order."),
    batch_size: int = typer.Option(8, help="Images per g_a call (equal padded sizes batch)."),
    threads: int = typer.Option(4, help="Image read/decode threads."),
    torch_threads: int = typer.Option(0, help="Torch CPU threads for g_a (0: default)."),
    device: str = typer.Option("auto", help="Where g_a runs: auto (CUDA if present), cpu, cuda:N."),
    executor: str = typer.Option("ray", help="ray: actor pool on a Ray cluster; local: in-process."),
    address: str = typer.Option(None, help="Ray cluster: auto or ray://host:10001 (default: embedded)."),
    workers: int = typer.Option(None, help="Ray actors (default: as many as CPUs/GPUs allow)."),
    cpus_per_worker: float = typer.Option(1.0, help="CPUs reserved per actor (its torch threads)."),
    gpus_per_worker: float = typer.Option(0.0, help="GPUs per actor; > 0 runs g_a on the GPU."),
    retry_failed: bool = typer.Option(False, help="Retry the failures ledger's transient rows "
                                      "(read-error) of a finished dataset as new shards."),
    progress: bool = typer.Option(True, help="Show the live progress bar."),
):
    """Encode an image dataset into latent shards (resumes: done shards are skipped)."""
    from pipeline.codec.load import CodecSpec
    from pipeline.convert import ConvertJob, ConvertOptions
    from pipeline.errors import ConfigError
    from pipeline.images import ImagePolicy
    from pipeline.shards.dataset import LatentDataset, summarize

    try:
        extra = tuple(float(v) for v in scales.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--scales takes fractions separated by commas (e.g. 0.75,0.5), "
                          f"not {scales!r}") from None
    policy = ImagePolicy(size=size, crop=crop, min_side=min_side, max_pixels=max_pixels, scales=extra)
    arch = renamed(arch, old_arch, "--codec-arch", "--arch")
    job = ConvertJob(src, out, fmt, split,
                     CodecSpec(checkpoint=checkpoint, arch=arch, quality=quality, pretrained=pretrained),
                     ConvertOptions(policy, shard_size, batch_size, threads, order=order),
                     torch_threads, device, tuple(["latents", *sys.argv[1:]]), retry_failed)
    ray = None
    if executor == "ray":
        from jobs.ray_convert import RayOptions

        ray = RayOptions(address, workers, cpus_per_worker, gpus_per_worker)
    elif workers is not None or address is not None:
        raise ConfigError(f"--workers and --address are for --executor ray, not {executor}")
    s = run_convert(job, executor, ray, console, progress)
    console.print(f"converted {s.converted} shard(s), skipped {s.skipped} already done, "
                  f"{s.images_per_s:.1f} images/s over {s.seconds:.1f} s")
    if retry_failed:
        console.print(f"retried {s.retried} failure(s): {s.recovered} converted now, "
                      f"{s.retried - s.recovered} failed again")
    print_summary(summarize(LatentDataset.open(out)))


if __name__ == "__main__":  # `python -m jobs.convert_cli SRC OUT [options]`, e.g. under `ray job submit`
    from jobs.console import App

    main = App(add_completion=False)
    main.command()(convert)
    main()
