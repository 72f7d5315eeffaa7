"""`latents bench`: every figure measured side by side in one run, on the same images."""

from __future__ import annotations

import tempfile
from pathlib import Path

from jobs.convert import ConvertJob, RayOptions, run_convert
from pipeline.codec.load import CodecSpec, load_codec
from pipeline.convert import ConvertOptions
from pipeline.eval.bench import (
    bare_compress_rate,
    imagenet_like_jpegs,
    loader_speed,
    make_jpeg_folder,
    profile_decode,
    profile_encode,
)
from pipeline.shards.dataset import LatentDataset, summarize


def run_bench(spec: CodecSpec, threads: int, images: int, workers: int, source: str | None = None,
              epochs: int = 3, batch_size: int = 32, cache_dir: str | None = None) -> dict:
    """Per-stage profiles on the bundled photos; then, on ``images`` generated ImageNet-like JPEGs
    (or the class-per-folder tree ``source``; with split folders, its ``train/``), convert and
    loader throughput side by side. The warm cache goes under ``cache_dir`` (default: a
    temporary folder; pass one on the disk training would use)."""
    codec = load_codec(spec)
    photos = imagenet_like_jpegs()
    figures = {"encode": profile_encode(codec, photos, threads=threads).to_json(),
               "decode": profile_decode(codec, photos, threads=threads).to_json()}
    if not images and not source:
        return figures
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = Path(source) if source else make_jpeg_folder(Path(tmp) / "jpeg", images)
        opts = ConvertOptions(shard_size=100)
        bare = bare_compress_rate(codec, str(jpegs), threads=workers)
        from jobs.ray_convert import connect

        connect(RayOptions())  # cluster start-up is not part of the conversion's rate
        local = run_convert(ConvertJob(str(jpegs), f"{tmp}/local", codec=spec, executor="local",
                                       torch_threads=workers, progress=False, options=opts))
        on_ray = run_convert(ConvertJob(str(jpegs), f"{tmp}/ray", codec=spec, executor="ray",
                                        progress=False, options=opts, ray=RayOptions(workers=workers)))
        figures["convert"] = {"images": local.manifest["totals"]["samples"], "bare_compress": bare,
                              "local": local.images_per_s, "ray": on_ray.images_per_s}
        s = summarize(LatentDataset.open(f"{tmp}/local"))
        figures["storage"] = {k: s[k] for k in ("samples", "source_bytes", "shard_bytes", "storage_ratio",
                                                "bpp_mean", "bpp_p50", "bpp_p95")}
        # the latent loader reads split 'train': a tree with split folders is a train/ folder for the JPEGs
        jpeg_train = jpegs / "train" if (jpegs / "train").is_dir() else jpegs
        with tempfile.TemporaryDirectory(dir=cache_dir) as cache:
            figures["loader"] = loader_speed(f"{tmp}/local", str(jpeg_train), cache, workers=workers,
                                             batch_size=batch_size, epochs=epochs).to_json()
    return figures
