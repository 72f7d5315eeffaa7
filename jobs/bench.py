"""`latents bench`: every figure measured side by side in one run, on the same images."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.table import Table

from jobs.convert_cli import run_convert
from jobs.ray_convert import RayOptions
from jobs.ray_session import connect
from pipeline.codec.load import CodecSpec, load_codec
from pipeline.convert import ConvertJob, ConvertOptions
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
    figures = {"codec": {"arch": codec.identity.arch, "source": spec.describe(), "N": codec.identity.N,
                         "M": codec.identity.M, "entropy_params": codec.entropy_params,
                         "fingerprint": codec.identity.fingerprint},
               "encode": profile_encode(codec, photos, threads=threads).to_json(),
               "decode": profile_decode(codec, photos, threads=threads).to_json()}
    if not images and not source:
        return figures
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = Path(source) if source else make_jpeg_folder(Path(tmp) / "jpeg", images)
        opts = ConvertOptions(shard_size=100)
        bare = bare_compress_rate(codec, str(jpegs), threads=workers)
        connect()  # cluster start-up is not part of the conversion's rate
        local = run_convert(ConvertJob(str(jpegs), f"{tmp}/local", codec=spec, torch_threads=workers,
                                       options=opts), "local")
        on_ray = run_convert(ConvertJob(str(jpegs), f"{tmp}/ray", codec=spec, options=opts), "ray",
                             RayOptions(workers=workers))
        figures["convert"] = {"images": local.manifest.totals.samples, "bare_compress": bare,
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


def bench_tables(figures: dict, threads: int, workers: int) -> list[Table]:
    """The figures of ``run_bench`` as the tables `latents bench` prints."""
    p, d, k = figures["encode"], figures["decode"], figures["codec"]
    t = Table(title=f"{k['source']}: {k['arch']} N={k['N']} M={k['M']}, {k['entropy_params']}\n"
                    f"per image, {p['image_hw'][0]}x{p['image_hw'][1]} padded, {threads} thread(s), "
                    f"bundled photos, medians")
    t.add_column("stage")
    t.add_column("ms", justify="right")
    rows = [("JPEG decode + resize + pad", p["prepare_ms"]), (f"g_a ({p['g_a_gmac']:.2f} GMAC)", p["g_a_ms"]),
            ("h_a + entropy parameters + rANS (encode - g_a)", p["entropy_ms"]),
            ("Codec.encode total", p["encode_ms"]),
            ("PIL decode of the same image as JPEG q90", d["jpeg_ms"]),
            ("decode_y, reference (CompressAI rANS)", d["decode_y_reference_ms"]),
            ("decode_y, fast path", d["decode_y_ms"]),
            ("  z rANS", d["z_rans_ms"]), (f"  entropy parameters ({d['entropy_params']})", d["h_s_ms"]),
            ("  y rANS (reference: CompressAI)", d["y_rans_reference_ms"]),
            ("  y rANS (fast)", d["y_rans_ms"])]
    for name, v in rows:
        t.add_row(name, f"{v:.2f}")
    t.add_row("ŷ decode ÷ JPEG decode (reference → fast)",
              f"{d['reference_over_jpeg']:.1f}x → {d['decode_over_jpeg']:.1f}x")
    tables = [t]
    if "convert" in figures:
        c, ld, st = figures["convert"], figures["loader"], figures["storage"]
        t = Table(title=f"{c['images']} images, {workers} cores / workers, batch {ld['batch_size']}, "
                        f"medians of {ld['epochs']} epochs")
        t.add_column("measure")
        t.add_column("value", justify="right")

        def rss(v: float | None) -> str:
            return f"{v:.0f} MB" if v is not None else "n/a"

        for name, v in [
            ("bare CompressAI compress(), images/s", f"{c['bare_compress']:.1f}"),
            ("convert --executor local, images/s", f"{c['local']:.1f}"),
            ("convert --executor ray, images/s", f"{c['ray']:.1f}"),
            ("encode efficiency (local ÷ bare)", f"{c['local'] / c['bare_compress']:.2f}"),
            ("Ray ÷ in-process", f"{c['ray'] / c['local']:.2f}"),
            ("storage ratio (source bytes ÷ shard bytes)", f"{st['storage_ratio']:.1f}x"),
            ("bpp mean / p50 / p95", f"{st['bpp_mean']:.3f} / {st['bpp_p50']:.3f} / {st['bpp_p95']:.3f}"),
            ("JPEG ImageFolder + RandomResizedCrop(224), samples/s", f"{ld['jpeg_samples_per_s']:.0f}"),
            ("ŷ loader, cold (entropy decode), samples/s", f"{ld['latent_cold_samples_per_s']:.0f}"),
            ("first epoch (workers starting): ŷ cold / filling the cache",
             f"{ld['latent_cold_first_epoch_samples_per_s']:.0f} / {ld['latent_fill_samples_per_s']:.0f}"),
            ("ŷ loader, warm (decoded-latent cache), samples/s", f"{ld['latent_warm_samples_per_s']:.0f}"),
            ("loader speed-up, cold", f"{ld['speedup_cold']:.2f}x"),
            ("loader speed-up, warm", f"{ld['speedup_warm']:.2f}x"),
            ("cache size (per sample)", f"{ld['cache_bytes'] / 2**20:.1f} MB "
             f"({ld['cache_bytes'] / max(1, ld['latent_samples']) / 1000:.1f} KB)"),
            ("peak RSS per worker: JPEG / ŷ cold / ŷ warm",
             f"{rss(ld['jpeg_peak_rss_mb'])} / {rss(ld['latent_cold_peak_rss_mb'])} / "
             f"{rss(ld['latent_warm_peak_rss_mb'])}"),
            ("  of which grown after the fork",
             f"{rss(ld['jpeg_rss_growth_mb'])} / {rss(ld['latent_cold_rss_growth_mb'])} / "
             f"{rss(ld['latent_warm_rss_growth_mb'])}"),
        ]:
            t.add_row(name, v)
        tables.append(t)
    return tables
