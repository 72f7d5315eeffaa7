import pytest

from jobs.bench import run_bench
from pipeline.codec.load import CodecSpec


@pytest.mark.ray
def test_bench_measures_every_figure_side_by_side(ray_cluster):
    f = run_bench(CodecSpec(), threads=1, images=8, workers=1, epochs=1, batch_size=4)
    e, d = f["encode"], f["decode"]
    assert min(e["prepare_ms"], e["g_a_ms"], e["encode_ms"], e["decode_y_ms"]) > 0
    assert e["entropy_ms"] == pytest.approx(e["encode_ms"] - e["g_a_ms"])
    assert d["decode_over_jpeg"] == pytest.approx(d["decode_y_ms"] / d["jpeg_ms"])
    c, ld, st = f["convert"], f["loader"], f["storage"]
    assert c["images"] == 8 and min(c["bare_compress"], c["local"], c["ray"]) > 0
    assert st["samples"] == 8 and st["storage_ratio"] == pytest.approx(st["source_bytes"] / st["shard_bytes"],
                                                                       rel=1e-3)
    assert st["bpp_p50"] <= st["bpp_p95"]
    assert ld["samples"] == ld["latent_samples"] == 8 and ld["epochs"] == 1
    for k in ("jpeg", "latent_cold", "latent_cold_first_epoch", "latent_fill", "latent_warm"):
        assert ld[f"{k}_samples_per_s"] > 0
    assert ld["speedup_cold"] == pytest.approx(ld["latent_cold_samples_per_s"] / ld["jpeg_samples_per_s"])
    assert ld["speedup_warm"] == pytest.approx(ld["latent_warm_samples_per_s"] / ld["jpeg_samples_per_s"])
    assert ld["cache_bytes"] > 0 and ld["latent_warm_peak_rss_mb"] >= ld["latent_warm_rss_growth_mb"] > 0
