import pytest

from jobs.bench import run_bench
from pipeline.codec.load import CodecSpec


@pytest.mark.ray
def test_bench_measures_every_figure_side_by_side(ray_cluster):
    f = run_bench(CodecSpec(), threads=1, images=8, workers=1)
    e = f["encode"]
    assert min(e["prepare_ms"], e["g_a_ms"], e["encode_ms"], e["decode_y_ms"]) > 0
    assert e["entropy_ms"] == pytest.approx(e["encode_ms"] - e["g_a_ms"])
    c, ld = f["convert"], f["loader"]
    assert min(c["bare_compress"], c["local"], c["ray"]) > 0
    assert ld["samples"] == 8 and ld["latent_samples_per_s"] > 0 and ld["jpeg_samples_per_s"] > 0
    assert ld["speedup"] == pytest.approx(ld["latent_samples_per_s"] / ld["jpeg_samples_per_s"])
