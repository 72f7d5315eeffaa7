from pipeline.eval.bench import imagenet_like_jpegs, profile_encode


def test_encode_profile_measures_every_stage(default_codec):
    jpegs = imagenet_like_jpegs()[:4]
    p = profile_encode(default_codec, jpegs, threads=1, batch=2, reps=1)
    assert p.image_hw == (256, 384)  # 500x375 -> 341x256, padded to a multiple of 64
    assert min(p.prepare_ms, p.g_a_ms, p.encode_ms, p.decode_y_ms) > 0
    assert p.to_json()["entropy_ms"] == p.encode_ms - p.g_a_ms  # timings are not compared: noise
    assert 0.5 < p.g_a_gmac < 2.0  # N=64 M=96 at 256x384


def test_decode_profile_sets_decoding_beside_jpeg(default_codec):
    from pipeline.eval.bench import profile_decode

    d = profile_decode(default_codec, imagenet_like_jpegs()[:3], reps=1)
    assert d.images == 3 and d.image_hw == (256, 341) and d.fast_decoder
    assert min(d.jpeg_ms, d.decode_y_ms, d.decode_y_reference_ms, d.h_s_ms, d.y_rans_ms,
               d.y_rans_reference_ms, d.z_rans_ms) > 0
    j = d.to_json()
    assert j["decode_over_jpeg"] == d.decode_y_ms / d.jpeg_ms
    assert j["reference_over_jpeg"] == d.decode_y_reference_ms / d.jpeg_ms
