"""Integer hyper-synthesis: the same indexes and ŷ on every path, bounds enforced, old data intact."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.codec import checkpoint, integer
from pipeline.codec.integer import EXACT_FP32, IntegerHyperSynthesis, IntLayer
from pipeline.codec.load import CodecSpec, codec_from_checkpoint, load_codec
from pipeline.codec_train import integerize, quantize
from pipeline.errors import CodecError
from tests.conftest import gradient, tiny_checkpoint

FIXTURE = Path(__file__).parents[1] / "fixtures"
HYPERPRIORS = ["bmshj2018-hyperprior", "mbt2018-mean"]


def _images(n=6, h=192, w=256):
    return [torch.from_numpy(gradient(h, w, seed=i)).permute(2, 0, 1).float() / 255 for i in range(n)]


@pytest.fixture(scope="module", params=HYPERPRIORS)
def int_pair(request):
    """(float checkpoint, the same with a quantised integer h_s) of a tiny random codec."""
    ck = tiny_checkpoint(request.param)
    cfg = integerize.IntegerizeConfig(crops=16, patch=128, steps=0)
    return ck, integerize.integerize(ck, _images(), cfg)


def _batch(n, seed=0, h=192, w=256):
    imgs = [gradient(h, w, seed=seed + i) for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("arch", HYPERPRIORS)
def test_integer_layers_compute_compressais_h_s(arch):
    """The phase form of every transposed convolution is the same function as ConvTranspose2d."""
    model = checkpoint.build_model(tiny_checkpoint(arch)).double()
    z = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    x = z
    for layer in integer.float_layers(model.h_s):
        x = layer.forward(x)
    assert torch.allclose(x, model.h_s(z), atol=1e-10)
    # medians folded into an all-ones input channel: the same function on the symbols, borders too
    medians = torch.randn(16, dtype=torch.float64)
    layers = integer.float_layers(model.h_s)
    layers[0] = quantize.fold_medians(layers[0], medians)
    x = z.round()
    for layer in layers:
        x = layer.forward(x)
    assert torch.allclose(x, model.h_s(z.round() + medians.view(1, -1, 1, 1)), atol=1e-10)


def test_same_indexes_and_y_hat_on_every_path(int_pair):
    """1 and 2 threads, batch sizes 1 and 8, float32 and float64 GEMMs: identical integers."""
    _, ick = int_pair
    codec = codec_from_checkpoint(ick)
    hs = codec.entropy
    assert isinstance(hs, IntegerHyperSynthesis) and all(b < EXACT_FP32 for b in hs.bounds)
    rng = np.random.default_rng(0)
    z = rng.integers(-hs.in_clip - 3, hs.in_clip + 4, size=(8, 16, 3, 4)).astype(np.int32)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for dtype in (torch.float32, torch.float64):
                runs.append(hs(z, gemm_dtype=dtype))
                singles = [hs(z[i:i + 1], gemm_dtype=dtype) for i in range(8)]
                runs.append((np.concatenate([s[0] for s in singles]),
                             None if singles[0][1] is None else np.concatenate([s[1] for s in singles])))
    finally:
        torch.set_num_threads(threads)
    for idx, means in runs[1:]:
        assert np.array_equal(idx, runs[0][0])
        assert (means is None and runs[0][1] is None) or np.array_equal(means, runs[0][1])
    assert runs[0][0].dtype == np.int32 and 0 <= runs[0][0].min() and runs[0][0].max() < 64
    # and a decoded ŷ is the same from a batch of 8 and one image at a time
    x = _batch(8)
    blobs = [e.data for e in codec.encode(x, [(192, 256)] * 8)]
    one = [codec.encode(x[i:i + 1], [(192, 256)])[0].data for i in range(8)]
    assert blobs == one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the CPU paths above always run")
def test_same_integers_on_cuda(int_pair):  # pragma: no cover - GPU machines only
    _, ick = int_pair
    hs = codec_from_checkpoint(ick).entropy
    z = torch.randint(-hs.in_clip, hs.in_clip + 1, (4, 16, 3, 4), dtype=torch.int32)
    cpu_idx, cpu_means = hs(z)
    cpu = hs.run(z)
    hs.to("cuda")
    gpu = hs.run(z.cuda()).cpu()
    gpu_idx, gpu_means = hs(z.cuda())
    assert torch.equal(cpu, gpu) and np.array_equal(cpu_idx, gpu_idx)
    assert (cpu_means is None and gpu_means is None) or np.array_equal(cpu_means, gpu_means)


def test_integer_h_s_round_trips_and_decodes_exactly_in_another_process(int_pair, tmp_path):
    fck, ick = int_pair
    checkpoint.save(ick, str(tmp_path / "int.pt"))
    back = checkpoint.read(str(tmp_path / "int.pt"))
    a, b = codec_from_checkpoint(ick), codec_from_checkpoint(back)
    assert a.identity.fingerprint == b.identity.fingerprint
    assert a.identity.fingerprint != codec_from_checkpoint(fck).identity.fingerprint
    assert a.identity.entropy_params == integer.ENTROPY_PARAMS
    blob = a.encode(_batch(1, seed=5), [(180, 250)])[0].data
    here = hashlib.sha256(a.decode_y(blob).numpy().tobytes()).hexdigest()
    code = ("import sys, hashlib, torch, warnings; warnings.filterwarnings('ignore');"
            "torch.set_num_threads(2);"
            "from pipeline.codec.load import CodecSpec, load_codec;"
            f"c = load_codec(CodecSpec(checkpoint={str(tmp_path / 'int.pt')!r}));"
            "print(hashlib.sha256(c.decode_y(sys.stdin.buffer.read()).numpy().tobytes()).hexdigest())")
    child = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert child.stdout.decode().strip() == here


def test_scale_only_y_hat_is_the_integer_symbols():
    fck = tiny_checkpoint("bmshj2018-hyperprior")
    ick = integerize.integerize(fck, _images(), integerize.IntegerizeConfig(crops=16, patch=128, steps=0))
    fc, ic = codec_from_checkpoint(fck), codec_from_checkpoint(ick)
    x = _batch(2, seed=3)
    yi = [ic.decode_y(e.data, crop=False) for e in ic.encode(x, [(192, 256)] * 2)]
    yf = [fc.decode_y(e.data, crop=False) for e in fc.encode(x, [(192, 256)] * 2)]
    for a, b in zip(yi, yf, strict=True):
        assert torch.equal(a, b) and torch.equal(a, a.round())  # the same ŷ, whichever h_s


def test_a_slim_hyper_path_wider_than_nothing_integerizes_and_decodes():
    """slim-hyperprior: g_a / g_s of width N (16 here), z and h_s of width 64; the integer h_s
    maps 64 z channels, and ŷ is the same integer symbols as with the float h_s."""
    fck = tiny_checkpoint("slim-hyperprior")
    model = checkpoint.build_model(fck)
    assert model.g_a[0].out_channels == 16 and model.h_s[0].in_channels == 64
    ick = integerize.integerize(fck, _images(), integerize.IntegerizeConfig(crops=16, patch=128, steps=0))
    fc, ic = codec_from_checkpoint(fck), codec_from_checkpoint(ick)
    assert ic.entropy.z_channels == 64
    x = _batch(1, seed=4)
    (ei,), (ef,) = ic.encode(x, [(180, 250)]), fc.encode(x, [(180, 250)])
    assert torch.equal(ic.decode_y(ei.data), fc.decode_y(ef.data))


def test_quantised_indexes_follow_the_float_ones(int_pair):
    """PTQ is a faithful copy: most CDF indexes equal the float path's, the rest are neighbours."""
    fck, ick = int_pair
    fc, ic = codec_from_checkpoint(fck), codec_from_checkpoint(ick)
    x = _batch(2, seed=11)
    with torch.no_grad():
        y = fc.model.g_a(x)
        z = fc.model.h_a(torch.abs(y) if fc.arch.family == "scale-hyperprior" else y)
    z_sym = torch.round(z.double() - fc.medians.view(1, -1, 1, 1)).int().numpy()
    fi, _ = fc.y_params(z_sym)
    ii, _ = ic.y_params(z_sym)
    diff = np.abs(fi.astype(int) - ii.astype(int))
    assert (diff == 0).mean() > 0.6 and (diff <= 2).mean() > 0.97


def _one_layer(k0: int, bias: int, divisor: int) -> IntegerHyperSynthesis:
    """A hand-made integer h_s: one 3x3 layer, centre tap ``k0`` on z channel 0, two outputs."""
    k = torch.zeros(2, 2, 3, 3, dtype=torch.long)
    k[:, 0, 1, 1] = k0
    layer = IntLayer(k, torch.full((2,), bias, dtype=torch.long), torch.full((2,), divisor, dtype=torch.long),
                     1, "none", 0, 0, 2**40)
    table = np.exp(np.linspace(np.log(0.11), np.log(256), 64))
    return IntegerHyperSynthesis([layer], in_clip=255, scale_channels=2, mean_channels=0, scale_table=table,
                                 scale_bound=0.11)


def test_layer_over_the_float32_bound_runs_in_float64_and_stays_exact():
    # 255·65793 + 2 = 2^24 + 1: odd, beyond float32's integers; ⌊(2^24 + 1 + 1) / 2⌋ = 2^23 + 1
    hs = _one_layer(65793, 2, 2)
    assert hs.bounds == [2**24 + 1] and hs.gemm_dtypes == [torch.float64]
    z = torch.full((1, 2, 3, 3), 255, dtype=torch.int32)
    assert torch.equal(hs.run(z)[0, :, 1, 1], torch.full((2,), 2.0**23 + 1, dtype=torch.float64))
    assert torch.equal(hs.run(z, gemm_dtype=torch.float32), hs.run(z))  # an exact layer is never downgraded
    assert float(torch.tensor(2**24 + 1, dtype=torch.float32)) == 2**24  # float32 would have been off by one
    under = _one_layer(65793, 0, 2)  # 2^24 - 1: float32 holds every partial sum
    assert under.bounds == [2**24 - 1] and under.gemm_dtypes == [torch.float32]
    assert torch.equal(under.run(z, gemm_dtype=torch.float64), under.run(z))


def test_layer_over_the_float64_bound_is_refused():
    with pytest.raises(CodecError, match="2\\^52"):
        _one_layer(2**52 // 255 + 1, 0, 1)


def test_damaged_integer_h_s_is_a_clear_error(int_pair, tmp_path):
    _, ick = int_pair
    for change in ({"layers.0.kernel": ick.integer_h_s["layers.0.kernel"].float()},
                   {"layers.1.divisor": torch.zeros_like(ick.integer_h_s["layers.1.divisor"])},
                   {"config": torch.tensor([5, 3])}):
        bad = checkpoint.Checkpoint(ick.arch, ick.N, ick.M, ick.state_dict, ick.quality, ick.lmbda,
                                    ick.metadata, {**ick.integer_h_s, **change})
        with pytest.raises(CodecError, match="integer h_s"):
            codec_from_checkpoint(bad)
    missing = {k: v for k, v in ick.integer_h_s.items() if k != "layers.0.bias"}
    bad = checkpoint.Checkpoint(ick.arch, ick.N, ick.M, ick.state_dict, integer_h_s=missing)
    with pytest.raises(CodecError, match="lacks 'layers.0.bias'"):
        codec_from_checkpoint(bad)
    fact = tiny_checkpoint("bmshj2018-factorized")
    with pytest.raises(CodecError, match="no hyper-synthesis"):
        codec_from_checkpoint(checkpoint.Checkpoint(fact.arch, fact.N, fact.M, fact.state_dict,
                                                    integer_h_s=ick.integer_h_s))


def test_float_checkpoints_are_written_as_before(tmp_path):
    """A checkpoint without an integer h_s is byte-for-byte a format-1 file (datasets' codec/)."""
    ck = checkpoint.read(FIXTURE / "float-v1" / "codec" / "codec.pt")
    assert ck.integer_h_s is None
    data = checkpoint.to_bytes(ck)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(
        (FIXTURE / "float-v1" / "codec" / "codec.pt").read_bytes()).hexdigest()


def test_dataset_written_by_the_float_path_decodes_bit_for_bit():
    from pipeline.shards.dataset import LatentDataset
    from pipeline.shards.verify import verify

    expected = json.loads((FIXTURE / "float-v1-expected.json").read_text())
    ds = LatentDataset.open(str(FIXTURE / "float-v1"))
    codec = ds.load_codec()
    assert codec.identity.fingerprint == expected["fingerprint"]
    assert codec.entropy_params == "h_s/float64/cpu/searchsorted-v1"
    for key, want in expected["y_hat_float32_sha256"].items():
        for reference in (False, True):
            y = codec.decode_y(ds.latent_bytes(key), crop=False, reference=reference)
            assert list(y.shape) == want["shape"]
            assert hashlib.sha256(y.numpy().tobytes()).hexdigest() == want["sha256"]
    assert verify(str(FIXTURE / "float-v1")).ok


def test_bundled_codecs_have_exact_integer_h_s():
    for spec in (CodecSpec(), CodecSpec(checkpoint="bundled:mbt2018-mean")):
        codec = load_codec(spec)
        assert codec.entropy_params == integer.ENTROPY_PARAMS
        assert all(b < EXACT_FP32 for b in codec.entropy.bounds)


def test_fine_tuning_keeps_the_best_validated_network():
    """Rate fine-tuning runs the integer network with straight-through rounding and keeps the
    step whose held-back crops code best: never worse than the quantised start."""
    ck = tiny_checkpoint("bmshj2018-hyperprior")
    cfg = integerize.IntegerizeConfig(crops=24, patch=128, steps=200, batch_size=4, lr=3e-4)
    ick = integerize.integerize(ck, _images(), cfg)
    history = ick.metadata["integer_h_s"]["fine_tune"]
    assert [h["step"] for h in history] == [0, 100, 200]
    assert min(h["val_bits_per_y"] for h in history) <= history[0]["val_bits_per_y"]
    codec = codec_from_checkpoint(ick)
    assert all(b < EXACT_FP32 for b in codec.entropy.bounds)
    x = _batch(1, seed=4)
    blob = codec.encode(x, [(192, 256)])[0].data
    assert torch.equal(codec.decode_y(blob), codec_from_checkpoint(ick).decode_y(blob))


def test_hand_made_checkpoint_over_the_bounds(int_pair, tmp_path):
    """A checkpoint whose first integer layer is scaled past 2^24 loads with that layer in float64
    and codes round trip; scaled past 2^52 it is refused when loading, with the reason."""
    _, ick = int_pair
    base = ick.integer_h_s
    bound0 = codec_from_checkpoint(ick).entropy.bounds[0]
    for factor, ok in ((2**25 // bound0 + 2, True), (2**54 // bound0 + 2, False)):
        ints = {**base, "layers.0.kernel": base["layers.0.kernel"].long() * factor,
                "layers.0.bias": base["layers.0.bias"] * factor,
                "layers.0.divisor": base["layers.0.divisor"] * factor}
        ck = checkpoint.Checkpoint(ick.arch, ick.N, ick.M, ick.state_dict, integer_h_s=ints)
        checkpoint.save(ck, str(tmp_path / "over.pt"))
        if not ok:
            with pytest.raises(CodecError, match="beyond what float64 computes exactly"):
                load_codec(CodecSpec(checkpoint=str(tmp_path / "over.pt")))
            continue
        codec = load_codec(CodecSpec(checkpoint=str(tmp_path / "over.pt")))
        assert codec.entropy.gemm_dtypes[0] == torch.float64 and codec.entropy.bounds[0] >= EXACT_FP32
        blob = codec.encode(_batch(1, seed=9), [(192, 256)])[0].data
        assert codec.decode_y(blob).shape[0] == ick.M
