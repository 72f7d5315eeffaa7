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
    profile_encode,
)


def run_bench(spec: CodecSpec, threads: int, images: int, workers: int) -> dict:
    codec = load_codec(spec)
    figures = {"encode": profile_encode(codec, imagenet_like_jpegs(), threads=threads).to_json()}
    if not images:
        return figures
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = make_jpeg_folder(Path(tmp) / "jpeg", images)
        opts = ConvertOptions(shard_size=max(1, images // 4))
        bare = bare_compress_rate(codec, str(jpegs), threads=workers)
        from jobs.ray_convert import connect

        connect(RayOptions())  # cluster start-up is not part of the conversion's rate
        local = run_convert(ConvertJob(str(jpegs), f"{tmp}/local", codec=spec, executor="local",
                                       torch_threads=workers, progress=False, options=opts))
        on_ray = run_convert(ConvertJob(str(jpegs), f"{tmp}/ray", codec=spec, executor="ray",
                                        progress=False, options=opts, ray=RayOptions(workers=workers)))
        figures["convert"] = {"bare_compress": bare, "local": local.images_per_s, "ray": on_ray.images_per_s}
        figures["loader"] = loader_speed(f"{tmp}/local", str(jpegs), workers=workers).to_json()
    return figures
