import pytest

from jobs.bench import run_bench
from pipeline.codec.load import CodecSpec
from pipeline.eval.bench import make_jpeg_folder


@pytest.mark.ray
def test_bench_measures_every_figure_side_by_side(ray_cluster, tmp_path):
    """Every figure is there and describes the images it was given (timings themselves are
    checked against a controlled clock in tests/eval/test_bench.py, not here: noise)."""
    jpegs = make_jpeg_folder(tmp_path / "jpeg", 8)
    f = run_bench(CodecSpec(), threads=1, images=0, workers=1, source=str(jpegs), epochs=1, batch_size=4)
    e, d = f["encode"], f["decode"]
    assert set(e) >= {"prepare_ms", "g_a_ms", "encode_ms", "decode_y_ms", "entropy_ms", "g_a_gmac"}
    assert d["entropy_params"] == f["codec"]["entropy_params"] and d["images"] >= 3
    c, ld, st = f["convert"], f["loader"], f["storage"]
    assert c["images"] == 8 and set(c) == {"images", "bare_compress", "local", "ray"}
    # storage is measured on the files: the source bytes are the JPEGs' sizes on disk
    assert st["samples"] == 8
    assert st["source_bytes"] == sum(p.stat().st_size for p in jpegs.rglob("*.jpg"))
    assert st["shard_bytes"] < st["source_bytes"]  # q90 JPEGs vs ~0.5 bpp latents at 256 px
    assert st["bpp_p50"] <= st["bpp_p95"] and 0.05 < st["bpp_mean"] < 2
    assert ld["samples"] == ld["latent_samples"] == 8 and ld["epochs"] == 1
    assert ld["cache_bytes"] > 0 and ld["latent_warm_peak_rss_mb"] >= ld["latent_warm_rss_growth_mb"]
