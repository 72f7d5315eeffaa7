"""The fast decode path (own rANS decoder, bucket search) returns exactly the reference ŷ;
damaged streams are errors."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.codec import fast_rans
from pipeline.codec.entropy import CdfTables, ScaleBuckets
from pipeline.errors import CodecError, ContainerError
from pipeline.images import ImagePolicy, prepare_image
from pipeline.tasks.photos import bundled_photos
from tests.conftest import gradient


def test_the_fast_decoder_is_built_here():
    assert fast_rans.available(), f"fast rANS decoder not built: {fast_rans.unavailable_reason()}"


def _varied_images(n_per_photo=3, seed=0):
    """Crops of every bundled photo at several sizes and aspect ratios (many symbol statistics)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in bundled_photos():
        img = Image.open(p.path).convert("RGB")
        w, h = img.size
        for _ in range(n_per_photo):
            s = rng.uniform(0.3, 1.0)
            cw, ch = max(16, int(w * s)), max(16, int(h * rng.uniform(0.3, 1.0)))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out.append(img.crop((x, y, x + cw, y + ch)))
    return out


def _encode_all(codec, images, size):
    policy = ImagePolicy(size=size, multiple=codec.arch.multiple)
    blobs = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        p = prepare_image(buf.getvalue(), policy)
        x = torch.from_numpy(p.pixels.copy()).permute(2, 0, 1)[None].float() / 255
        blobs += [e.data for e in codec.encode(x, [p.enc_hw])]
    return blobs


@pytest.mark.parametrize("which", ["default", "float"])
def test_bundled_codecs_fast_equals_reference_over_many_images(default_codec, float_codec, which):
    """The integer default and the float64 path of older datasets (searchsorted as reference)."""
    codec = default_codec if which == "default" else float_codec
    images = _varied_images()
    blobs = _encode_all(codec, images[: len(images) // 2], 128)
    blobs += _encode_all(codec, images[len(images) // 2:], 256)
    assert len(blobs) >= 50
    for blob in blobs:
        fast = codec.decode_y(blob, crop=False)
        ref = codec.decode_y(blob, crop=False, reference=True)
        assert fast.dtype == ref.dtype and torch.equal(fast, ref)


def test_every_model_family_fast_equals_reference(tiny_codec):
    imgs = [gradient(64 * (1 + i % 3), 64 * (1 + i % 2), seed=i) for i in range(8)]
    for img in imgs:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        blob = tiny_codec.encode(x, [img.shape[:2]])[0].data
        assert torch.equal(tiny_codec.decode_y(blob, crop=False),
                           tiny_codec.decode_y(blob, crop=False, reference=True))


def _strings_both_ways(codec, blob):
    """Re-encode a container's symbols with both encoders: (fast strings, reference strings)."""
    from pipeline.codec.entropy import channel_indexes

    c = codec.parse(blob)
    if codec.arch.family == "factorized":
        pairs = [(codec.z_tables, codec.z_tables.decode(c.strings[0], channel_indexes(c.y_shape)),
                  channel_indexes(c.y_shape))]
    else:
        zi = channel_indexes(c.z_shape)
        z = codec.decode_z(c)
        yi = codec.y_params(z[None])[0][0]
        pairs = [(codec.y_tables, codec.y_tables.decode(c.strings[0], yi), yi), (codec.z_tables, z, zi)]
    return ([t.encode(s, i) for t, s, i in pairs], [t.encode(s, i, reference=True) for t, s, i in pairs],
            list(c.strings))


def test_fast_encoder_writes_compressais_bytes(default_codec, tiny_codec):
    blobs = _encode_all(default_codec, _varied_images(n_per_photo=1, seed=2), 192)
    for img in [gradient(64 * (1 + i % 3), 128, seed=i) for i in range(4)]:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        blobs.append((tiny_codec, tiny_codec.encode(x, [img.shape[:2]])[0].data))
    for item in blobs:
        codec, blob = item if isinstance(item, tuple) else (default_codec, item)
        fast, ref, stored = _strings_both_ways(codec, blob)
        assert fast == ref == stored


@pytest.mark.parametrize("scale", [3, 40, 5000, 2**24, 2**26 - 1])
def test_escaped_values_decode_like_the_reference(default_codec, scale):
    """Symbols far outside the tables go through the coder's bypass path; both coders agree.

    One symbol in ten is drawn from ±scale (the rest small), so CompressAI's encoder stays
    within its buffer; streams of nothing but escapes only the fast coder can write."""
    rng = np.random.default_rng(scale)
    for tables in (CdfTables(default_codec.model.gaussian_conditional),
                   CdfTables(default_codec.model.entropy_bottleneck)):
        n = 3000
        idx = rng.integers(0, len(tables.cdf_length), n).astype(np.int32)
        sym = rng.integers(-2, 3, n).astype(np.int32)
        wild = rng.random(n) < 0.1
        sym[wild] = rng.integers(-scale, scale + 1, int(wild.sum()))
        string = tables.encode(sym, idx, reference=True)
        assert tables.encode(sym, idx) == string  # the fast encoder writes the same bytes
        fast = tables.decode(string, idx)
        assert np.array_equal(fast, tables.decode(string, idx, reference=True))
        assert np.array_equal(fast, sym)
        everything = rng.integers(-scale, scale + 1, n).astype(np.int32)
        assert np.array_equal(tables.decode(tables.encode(everything, idx), idx), everything)


def test_compressais_encoder_is_not_asked_to_overrun_its_buffer(default_codec):
    t = CdfTables(default_codec.model.entropy_bottleneck)
    idx = np.zeros(3000, np.int32)
    with pytest.raises(CodecError, match="overrun its buffer"):
        t.encode(np.full(3000, 10**6, np.int32), idx, reference=True)
    with pytest.raises(CodecError, match="too far outside"):
        t.encode(np.array([0, 2**29, 0, 0], np.int32), idx[:4], reference=True)


def test_damaged_streams_are_errors_or_caught_by_the_symbol_crc(default_codec):
    t = CdfTables(default_codec.model.gaussian_conditional)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(t.cdf_length), 2000).astype(np.int32)
    sym = rng.integers(-3, 4, 2000).astype(np.int32)
    string = t.encode(sym, idx)
    for cut in (0, 4, 7, len(string) // 2, len(string) - 4):
        with pytest.raises(ContainerError, match="ended before"):
            t.fast.decode(string[:cut], idx)
    for _ in range(200):  # random garbage: an error or wrong symbols, never a crash or an over-read
        junk = rng.integers(0, 256, int(rng.integers(8, 400)), dtype=np.uint8).tobytes()
        try:
            out = t.fast.decode(junk, idx)
        except ContainerError:
            continue
        assert out.shape == idx.shape
    bad_idx = idx.copy()
    bad_idx[5] = len(t.cdf_length)
    with pytest.raises(ContainerError, match="CDF index"):
        t.fast.decode(string, bad_idx)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


# what an install without a C compiler leaves: no pipeline.codec._rans to import
_NOT_BUILT = """
import importlib.abc, sys
class NotBuilt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pipeline.codec._rans":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NotBuilt())
"""


def test_the_installed_extension_module_is_the_coder():
    from pipeline.codec import fast_rans

    assert fast_rans.available(), fast_rans.unavailable_reason()
    origin = Path(fast_rans._library_path())
    assert origin.parent == Path(fast_rans.__file__).parent and origin.name.startswith("_rans.")


def test_without_the_extension_the_reference_coder_is_used():
    code = ("from pipeline.codec import fast_rans; from pipeline.codec.load import load_codec\n"
            "import numpy as np, torch\n"
            "c = load_codec(); x = torch.rand(1, 3, 64, 64)\n"
            "b = c.encode(x, [(64, 64)])[0].data\n"
            "print(fast_rans.available(), fast_rans.unavailable_reason(), c.decode_y(b).shape)\n")
    out = _run(_NOT_BUILT + code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False") and "not built" in out.stdout and "[96, 4, 4]" in out.stdout
    warnings = [line for line in out.stderr.splitlines() if "CompressAI's coder" in line]
    assert len(warnings) == 1
    out = _run(code, LATENT_SHARDS_FAST_RANS="0")
    assert out.returncode == 0 and out.stdout.startswith("False") and "disabled" in out.stdout


def test_scale_buckets_equal_searchsorted_everywhere(default_codec):
    table = default_codec.model.gaussian_conditional.scale_table.double()[:-1].contiguous()
    t = table.numpy()
    rng = np.random.default_rng(0)
    values = [
        np.exp(rng.uniform(np.log(1e-3), np.log(1e4), 200_000)),
        np.concatenate([t, np.nextafter(t, 0), np.nextafter(t, np.inf)]),  # on and beside every edge
        np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-300, 1e300, t[0] / 2, t[-1] * 2]),
    ]
    buckets = ScaleBuckets(t)
    for v in values:
        want = torch.searchsorted(table, torch.from_numpy(v).contiguous(), right=False).numpy()
        assert np.array_equal(buckets(v), want)
    # an irregular table: the log guess is poor, the comparisons still make it exact
    odd = np.sort(rng.uniform(0.01, 50, 40))
    v = rng.uniform(0, 60, 50_000)
    assert np.array_equal(ScaleBuckets(odd)(v), np.searchsorted(odd, v, side="left"))
    with pytest.raises(CodecError, match="increasing"):
        ScaleBuckets(np.array([1.0, 1.0, 2.0]))


def test_fast_encoder_refuses_values_compressai_cannot_escape(default_codec):
    t = CdfTables(default_codec.model.entropy_bottleneck)
    idx = np.zeros(4, np.int32)
    with pytest.raises(Exception, match="too far outside"):
        t.encode(np.array([0, 2**29, 0, 0], np.int32), idx)


def test_decoder_start_table_is_a_lower_bound_of_every_bucket(default_codec):
    """The decoder starts each symbol search at starts[t, cum >> 8] and steps up: exact only if
    that entry is the last symbol whose CDF is <= the bucket's floor (checked for every table)."""
    for em in (default_codec.model.gaussian_conditional, default_codec.model.entropy_bottleneck):
        t = CdfTables(em).fast
        floors = np.arange(fast_rans.LUT_SIZE) << fast_rans.LUT_SHIFT
        for row, size, start in zip(t.cdf, t.sizes, t.starts, strict=True):
            k = start.astype(np.int64)
            assert (row[k] <= floors).all() and (k <= size - 2).all()
            nxt = np.minimum(k + 1, size - 1)
            assert ((row[nxt] > floors) | (k == size - 2)).all()
