"""Round trips over every registered architecture, and the bundled codec's quality band."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.codec.entropy import CdfTables
from pipeline.errors import CodecError, ContainerError, FingerprintMismatch
from pipeline.eval.rd import evaluate_image
from tests.conftest import gradient


def _batch(n=2, h=128, w=192, seed=0):
    imgs = [gradient(h, w, seed + i) for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


def test_round_trip_y_hat_is_quantised_y(tiny_codec):
    x = _batch()
    encoded = tiny_codec.encode(x, [(120, 180), (128, 192)])
    blobs = [e.data for e in encoded]
    assert [e.container for e in encoded] == [tiny_codec.parse(b) for b in blobs]
    with torch.no_grad():
        y = tiny_codec.model.g_a(x)
    for i, blob in enumerate(blobs):
        y_hat = tiny_codec.decode_y(blob, crop=False)
        assert y_hat.shape == y[i].shape and y_hat.dtype == torch.float32
        # Q(y - mu) + mu differs from y by at most half a step.
        assert (y_hat - y[i]).abs().max() <= 0.5 + 1e-4


def test_y_hat_matches_compressai_reference(tiny_codec):
    """Our canonical float64 path decodes the same y_hat as CompressAI's own float32 path."""
    m = tiny_codec.model
    x = _batch(1)
    with torch.no_grad():
        out = m.compress(x)
        if tiny_codec.arch.family == "factorized":
            ref = m.entropy_bottleneck.decompress(out["strings"][0], out["shape"])
        else:
            z_hat = m.entropy_bottleneck.decompress(out["strings"][1], out["shape"])
            params = m.h_s(z_hat)
            mean_scale = tiny_codec.arch.family.startswith("mean")
            scales, means = params.chunk(2, 1) if mean_scale else (params, None)
            idx = m.gaussian_conditional.build_indexes(scales)
            ref = m.gaussian_conditional.decompress(out["strings"][0], idx, z_hat.dtype, means)
    ours = tiny_codec.decode_y(tiny_codec.encode(x, [(128, 192)])[0].data, crop=False)
    close = torch.isclose(ours, ref[0], atol=1e-4)
    assert close.float().mean() > 0.999


def test_crop_keeps_the_valid_window(tiny_codec):
    blob = tiny_codec.encode(_batch(1, 128, 192), [(100, 129)])[0].data
    assert tuple(tiny_codec.decode_y(blob).shape[1:]) == (7, 9)  # ceil(100/16), ceil(129/16)
    assert tuple(tiny_codec.reconstruct(blob).shape) == (3, 100, 129)


def test_encode_is_deterministic(tiny_codec):
    x = _batch()
    assert tiny_codec.encode(x, [(128, 192)] * 2) == tiny_codec.encode(x, [(128, 192)] * 2)


def test_unpadded_input_is_refused(tiny_codec):
    with pytest.raises(CodecError, match="multiple of 64"):
        tiny_codec.encode(torch.rand(1, 3, 100, 128), [(100, 128)])


def test_other_codec_refuses_the_stream(default_codec, tiny_codec):
    blob = tiny_codec.encode(_batch(1), [(128, 192)])[0].data
    with pytest.raises(FingerprintMismatch, match="mismatch"):
        default_codec.decode_y(blob)


def test_single_symbol_is_refused_not_a_process_abort(default_codec):
    t = CdfTables(default_codec.model.entropy_bottleneck)
    with pytest.raises(CodecError, match="at least 2"):
        t.encode(np.zeros(1, np.int32), np.zeros(1, np.int32))
    with pytest.raises(ContainerError):
        t.decode(b"\0\0\0\0", np.zeros((1, 1, 1), np.int32))


def test_bundled_codec_quality_band(default_codec, photo):
    """Held-out photo: real bitstream bpp and PSNR inside a band (the codec's RD point)."""
    h, w = (s // 2 * 2 for s in photo.shape[:2])
    p = evaluate_image(default_codec, "holdout", np.ascontiguousarray(photo[:h, :w]))
    assert 0.1 < p.codec_bpp < 1.5
    assert p.codec_psnr > 24.0


DECODE_IN_CHILD = """
import sys, torch, hashlib, warnings
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from pipeline.codec.load import load_codec
c = load_codec()
y = c.decode_y(sys.stdin.buffer.read())
print(hashlib.sha256(y.numpy().tobytes()).hexdigest())
"""


def test_decode_is_bit_exact_in_another_process_with_other_threads(default_codec):
    torch.set_num_threads(2)
    blob = default_codec.encode(_batch(1, 256, 320), [(256, 320)])[0].data
    here = default_codec.decode_y(blob).numpy().tobytes()
    import hashlib

    child = subprocess.run([sys.executable, "-c", DECODE_IN_CHILD], input=blob,
                           capture_output=True, check=True)
    assert child.stdout.decode().strip() == hashlib.sha256(here).hexdigest()


def _reseal(blob: bytes, **changes) -> bytes:
    """Re-pack a container with some fields changed (valid outer CRC, wrong content)."""
    import dataclasses

    from pipeline.codec.container import LatentContainer

    return dataclasses.replace(LatentContainer.unpack(blob), **changes).pack()


def test_wrong_symbols_are_detected_not_returned(tiny_codec):
    blob = tiny_codec.encode(_batch(1), [(128, 192)])[0].data
    with pytest.raises(ContainerError, match="checksum"):
        tiny_codec.decode_y(_reseal(blob, symbols_crc=12345))


@pytest.mark.parametrize("changes", [
    {"y_shape": (24, 8, 13)}, {"padded_hw": (128, 200)}, {"image_hw": (129, 192)},
    {"z_shape": (17, 2, 3)},
])
def test_shapes_that_do_not_fit_the_codec_never_reach_the_coder(tiny_codec, changes):
    blob = tiny_codec.encode(_batch(1), [(128, 192)])[0].data
    if "z_shape" in changes and tiny_codec.arch.family == "factorized":
        changes = {"z_shape": (16, 2, 3)}
    with pytest.raises(ContainerError, match="does not fit"):
        tiny_codec.decode_y(_reseal(blob, **changes))
