from pipeline.eval.bench import imagenet_like_jpegs, profile_encode


def test_encode_profile_measures_every_stage(default_codec):
    jpegs = imagenet_like_jpegs()[:4]
    p = profile_encode(default_codec, jpegs, threads=1, batch=2, reps=1)
    assert p.image_hw == (256, 384)  # 500x375 -> 341x256, padded to a multiple of 64
    assert min(p.prepare_ms, p.g_a_ms, p.encode_ms, p.decode_y_ms) > 0
    assert p.to_json()["entropy_ms"] == p.encode_ms - p.g_a_ms  # timings are not compared: noise
    assert 0.5 < p.g_a_gmac < 2.0  # N=64 M=96 at 256x384
