"""`latents cache warm|info|clear`: the warm decoded-latent cache from the command line."""

from __future__ import annotations

import json
import os

import typer

from jobs.console import App, console

cache_app = App(help="The warm decoded-latent cache: fill it ahead of training, show it, clear it.",
                        no_args_is_help=True)


def _open_cache(data: str, cache: str):
    from pipeline.loader.cache import LatentCache
    from pipeline.shards.dataset import LatentDataset

    return LatentCache.for_dataset(cache, LatentDataset.open(data))


@cache_app.command("warm")
def cache_warm(
    data: str = typer.Argument(..., help="Latent dataset root."),
    cache: str = typer.Option(..., help="Cache directory (local disk), as given to training."),
    cache_gb: float = typer.Option(20.0, help="Size limit; once full, further samples are not cached."),
    split: list[str] = typer.Option(None, help="Only these splits (repeatable); default: all."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Decoding processes."),
    target: str = typer.Option("class", help="The loaders it serves: class, detection or segmentation "
                               "(each kind has its own cache file: it keeps their targets beside ŷ)."),
):
    """Decode every ŷ of the dataset into the cache with all cores, before training starts."""
    from jobs.progress import StepBar
    from pipeline.loader.warm import warm_cache
    from pipeline.shards.dataset import LatentDataset

    m = LatentDataset.open(data).manifest
    total = sum(s.samples for s in m.shards if not split or s.split in split)
    with StepBar("warming", total, console) as advance:
        res = warm_cache(data, cache, int(cache_gb * 2**30), split or None, workers,
                         on_shard=lambda _name, n: advance(n), target=target)
    st = res.stats
    console.print(f"{res.samples} of {res.expected} samples cached from {res.shards} shard(s): "
                  f"{st['bytes'] / 2**20:.1f} MB in {st['path']}")
    if res.samples < res.expected:
        console.print(f"[yellow]the cache is full at {cache_gb} GB: the other samples will be decoded "
                      "every epoch (raise --cache-gb to hold them)")


@cache_app.command("info")
def cache_info(data: str = typer.Argument(..., help="Latent dataset root."),
               cache: str = typer.Option(..., help="Cache directory.")):
    """Samples, shards and bytes the cache holds for this dataset and its codec."""
    c = _open_cache(data, cache)
    if not c.path.exists():
        console.print(f"no cache for {data} under {cache}")
        return
    st = c.stats()
    console.print_json(json.dumps(st))


@cache_app.command("clear")
def cache_clear(data: str = typer.Argument(..., help="Latent dataset root."),
                cache: str = typer.Option(..., help="Cache directory.")):
    """Delete this dataset's cache file."""
    import shutil

    c = _open_cache(data, cache)
    existed = c.dir.exists()
    shutil.rmtree(c.dir, ignore_errors=True)
    console.print(f"removed {c.dir}" if existed else f"no cache for {data} under {cache}")
