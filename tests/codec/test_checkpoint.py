import pytest
import torch

from pipeline.codec import checkpoint
from pipeline.codec.fingerprint import codec_fingerprint
from pipeline.codec.load import CodecSpec, codec_from_checkpoint, load_codec
from pipeline.codec.registry import ARCHITECTURES, get_architecture
from pipeline.errors import CodecError
from tests.conftest import tiny_checkpoint


def test_registry_names_are_stable():
    assert {"bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"} <= set(ARCHITECTURES)
    with pytest.raises(CodecError, match="choose one of"):
        get_architecture("nope")


def test_project_format_round_trip_keeps_fingerprint(tmp_path):
    ck = tiny_checkpoint("mbt2018-mean")
    checkpoint.save(ck, str(tmp_path / "c.pt"))
    a = codec_from_checkpoint(ck).identity.fingerprint
    b = load_codec(CodecSpec(checkpoint=str(tmp_path / "c.pt"))).identity.fingerprint
    assert a == b


def test_compressai_state_dict_loads_with_arch_and_gets_tables_once(tmp_path):
    torch.manual_seed(1)
    model = get_architecture("bmshj2018-hyperprior").build(16, 24)  # never update()d
    torch.save(model.state_dict(), tmp_path / "plain.pth.tar")
    with pytest.raises(CodecError, match="--codec-arch"):
        load_codec(CodecSpec(checkpoint=str(tmp_path / "plain.pth.tar")))
    codec = load_codec(CodecSpec(checkpoint=str(tmp_path / "plain.pth.tar"), arch="bmshj2018-hyperprior"))
    assert codec.identity.N == 16 and codec.identity.M == 24
    assert codec.model.gaussian_conditional._quantized_cdf.numel() > 0


def test_fingerprint_covers_weights_and_cdf_tables_not_versions():
    ck = tiny_checkpoint("mbt2018-mean")
    sd = dict(ck.state_dict)
    base = codec_fingerprint("mbt2018-mean", 16, 24, sd, "compressai-ans", 1)
    cdf_key = "gaussian_conditional._quantized_cdf"
    changed = dict(sd, **{cdf_key: sd[cdf_key].clone()})
    changed[cdf_key][0, 3] += 1
    assert codec_fingerprint("mbt2018-mean", 16, 24, changed, "compressai-ans", 1) != base
    w = dict(sd, **{"h_s.0.weight": sd["h_s.0.weight"] + 1e-3})
    assert codec_fingerprint("mbt2018-mean", 16, 24, w, "compressai-ans", 1) != base
    assert codec_fingerprint("mbt2018-mean", 16, 24, sd, "other-coder", 1) != base
    assert codec_fingerprint("mbt2018-mean", 16, 24, sd, "compressai-ans", 2) != base
    assert codec_fingerprint("mbt2018-mean", 16, 24, dict(sd), "compressai-ans", 1) == base
    ident = codec_from_checkpoint(ck).identity
    assert "torch" in ident.versions and ident.versions["compressai"]


def test_half_precision_checkpoint_decodes_exactly_what_it_encodes(tmp_path):
    torch.manual_seed(0)
    ck = checkpoint.finalize(get_architecture("mbt2018-mean").build(16, 24), "mbt2018-mean", half=True)
    sd = ck.state_dict
    assert sd["g_a.0.weight"].dtype == torch.float16  # learned parameters: half
    assert sd["gaussian_conditional.scale_table"].dtype == torch.float32  # buffers: exact
    assert sd["g_a.1.beta_reparam.pedestal"].item() > 0  # would underflow to 0 in float16
    checkpoint.save(ck, str(tmp_path / "h.pt"))
    enc = load_codec(CodecSpec(checkpoint=str(tmp_path / "h.pt")))
    dec = load_codec(CodecSpec(checkpoint=str(tmp_path / "h.pt")))
    x = torch.rand(1, 3, 64, 128)
    blob = enc.encode(x, [(64, 128)])[0].data
    assert torch.equal(enc.decode_y(blob), dec.decode_y(blob))


def test_pretrained_offline_says_to_pass_checkpoint(monkeypatch):
    import compressai.zoo.image as zi
    import compressai.zoo.pretrained as zp

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(zi, "load_state_dict_from_url", offline)
    monkeypatch.setattr(zp, "load_pretrained", offline, raising=False)
    with pytest.raises(CodecError, match="--checkpoint"):
        load_codec(CodecSpec(arch="mbt2018-mean", quality=3, pretrained=True))


def test_missing_checkpoint_and_garbage_file(tmp_path):
    with pytest.raises(CodecError, match="does not exist"):
        load_codec(CodecSpec(checkpoint=str(tmp_path / "nope.pt")))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CodecError, match="not a readable"):
        load_codec(CodecSpec(checkpoint=str(tmp_path / "junk.pt")))


def test_bundled_codec_records_how_it_was_made():
    ck = checkpoint.read(checkpoint.__file__.replace("checkpoint.py", "weights/default.pt"))
    assert ck.metadata["command"].startswith("latents train-codec")
    assert ck.metadata["holdout_photos"]
    assert checkpoint.has_cdf_tables(ck.state_dict)


def test_warm_start_copies_every_tensor_that_fits(tmp_path):
    from pipeline.codec_train.train import warm_start

    src = tiny_checkpoint("mbt2018-mean")
    checkpoint.save(src, str(tmp_path / "mean.pt"))
    torch.manual_seed(1)
    model = get_architecture("bmshj2018-hyperprior").build(16, 24)
    taken = warm_start(model, str(tmp_path / "mean.pt"))
    sd = model.state_dict()
    assert "g_a.0.weight" in taken and "h_a.0.weight" in taken and "g_s.0.weight" in taken
    assert not any(k.startswith("h_s.") for k in taken)  # mean-scale h_s has other shapes
    assert not any(k.endswith(checkpoint.CDF_BUFFERS) for k in taken)  # tables are rebuilt
    for k in taken:
        assert torch.equal(sd[k], src.state_dict[k].to(sd[k].dtype))
    with pytest.raises(ValueError, match="shares no learned tensor"):
        warm_start(torch.nn.Linear(3, 3), str(tmp_path / "mean.pt"))
