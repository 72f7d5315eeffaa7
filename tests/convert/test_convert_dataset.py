"""`convert_dataset` end to end, through the library (the local executor): messy and real
inputs, the on-disk format, resume, storage faults and determinism."""

from __future__ import annotations

import errno
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import fsspec
import pandas as pd
import pytest
import webdataset as wds

from pipeline.convert import ConvertJob, ConvertOptions, LocalExecutor, convert_dataset
from pipeline.shards.dataset import LatentDataset
from tests.trees import tree_bytes

BAD_REASONS = {
    "zero": "empty-file", "truncated": "truncated", "text": "not-an-image", "page": "not-an-image",
    "one": "too-small", "seven-high": "too-small", "bomb": "decompression-bomb",
    "folder": "not-a-file", "dangling": "not-a-file",
}
GOOD_BAD = {"cmyk", "sixteen", "palette", "rgba", "rotated", "café au lait"}

def _convert(src, out, shard_size=4, **kw) -> dict:
    job = ConvertJob(str(src), str(out), options=ConvertOptions(shard_size=shard_size, batch_size=3),
                     command=("latents", "convert", "SRC", "OUT"), **kw)
    return convert_dataset(job, LocalExecutor()).manifest.raw


@pytest.fixture()
def messy_out(messy_tree, tmp_path):
    out = tmp_path / "out"
    _convert(messy_tree, out)
    return out


def test_every_input_is_a_sample_or_a_failure_row(messy_tree, messy_out):
    index = pd.read_parquet(messy_out / "index.parquet")
    failures = pd.read_parquet(messy_out / "failures.parquet")
    listed = {p.name for p in (messy_tree / "bad").iterdir()} | {
        p.name for p in (messy_tree / "good").iterdir() if p.suffix != ".txt"}
    assert len(index) + len(failures) == len(listed) == 18
    assert set(index["key"]).isdisjoint(failures["key"])
    got = {Path(u).stem: r for u, r in zip(failures["source_uri"], failures["reason"], strict=True)}
    assert got == BAD_REASONS
    assert {Path(u).stem for u in index["source_uri"]} == GOOD_BAD | {"g0", "g1", "g2"}
    assert all(k.replace("_", "").replace("-", "").isalnum() for k in index["key"])
    assert failures["detail"].str.len().min() > 0 and failures["source_uri"].notna().all()


def test_manifest_layout_and_codec_copy(messy_out):
    m = json.loads((messy_out / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["classes"] == ["bad", "good"]
    assert m["totals"]["samples"] == 9 and m["totals"]["failures"] == 9
    assert m["splits"]["train"]["shards"] == len(m["shards"]) == 5
    for key in ("arch", "N", "M", "fingerprint", "coder", "container_version", "versions"):
        assert key in m["codec"]
    assert (messy_out / "codec" / "codec.pt").is_file()
    for s in m["shards"]:
        assert (messy_out / "shards" / f"{s['name']}.tar").stat().st_size == s["tar_bytes"]
    assert not list(messy_out.rglob("*.tmp"))


def test_shards_read_with_plain_webdataset_and_tar(messy_out):
    tars = sorted(str(p) for p in (messy_out / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False).decode())
    index = pd.read_parquet(messy_out / "index.parquet")
    assert sorted(s["__key__"] for s in samples) == sorted(index["key"])
    for s in samples:
        assert s["json"]["key"] == s["__key__"] and isinstance(s["cls"], int)
        assert s["latent"][:4] == b"LTNT"
    listing = subprocess.run(["tar", "-tf", tars[0]], capture_output=True, text=True, check=True)
    assert listing.stdout.splitlines()[0].endswith(".latent")


def test_index_offsets_point_at_members(messy_out):
    index = pd.read_parquet(messy_out / "index.parquet")
    for r in index.itertuples():
        data = (messy_out / "shards" / f"{r.shard}.tar").read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            member = tf.extractfile(f"{r.key}.latent").read()
            assert member == data[r.latent_offset : r.latent_offset + r.latent_size]
            assert json.loads(data[r.json_offset : r.json_offset + r.json_size])["key"] == r.key
            assert int(data[r.cls_offset : r.cls_offset + r.cls_size]) == r.label
        assert r.bpp == pytest.approx(8 * r.latent_size / (r.enc_h * r.enc_w))
        assert (r.valid_h, r.valid_w) == (-(-r.enc_h // 16), -(-r.enc_w // 16))


def test_rerun_changes_no_byte(messy_tree, messy_out):
    before = tree_bytes(messy_out)
    _convert(messy_tree, messy_out)
    assert tree_bytes(messy_out) == before


def test_interrupted_run_resumes_to_identical_bytes(photo_tree, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    _convert(photo_tree, ref, shard_size=3)
    reference = tree_bytes(ref)
    shutil.rmtree(ref)

    import pipeline.convert.driver as jc

    real = jc.convert_shard
    calls = []

    def dies_on_second_shard(task, *a, **k):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the driver is killed mid-run
        return real(task, *a, **k)

    monkeypatch.setattr(jc, "convert_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        _convert(photo_tree, ref, shard_size=3)
    assert not (ref / "manifest.json").exists()
    assert len(list((ref / "shards").glob("*.parquet"))) == 1
    monkeypatch.setattr(jc, "convert_shard", real)
    _convert(photo_tree, ref, shard_size=3)
    assert tree_bytes(ref) == reference


def test_other_codec_refuses_to_mix_into_existing_output(photo_tree, tmp_path):
    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec
    from pipeline.errors import DatasetError
    from tests.conftest import tiny_checkpoint

    out = tmp_path / "out"
    _convert(photo_tree, out)
    checkpoint.save(tiny_checkpoint("mbt2018-mean"), str(tmp_path / "other.pt"))
    with pytest.raises(DatasetError, match="new OUT"):
        _convert(photo_tree, out, codec=CodecSpec(checkpoint=str(tmp_path / "other.pt")))


def test_real_photos_round_trip_through_dataset(photo_tree, tmp_path):
    out = tmp_path / "out"
    m = _convert(photo_tree, out)
    ds = LatentDataset.open(str(out))
    codec = ds.load_codec()
    key = ds.index.column("key")[0].as_py()
    y = codec.decode_y(ds.latent_bytes(key))
    row = ds.row(key)
    assert tuple(y.shape) == (m["codec"]["M"], row["valid_h"], row["valid_w"])
    assert m["totals"]["storage_ratio"] > 3  # JPEG q90 photos vs ~0.5 bpp latents


def test_empty_source_is_a_clear_error(tmp_path):
    from pipeline.errors import SourceError

    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image found"):
        _convert(tmp_path / "empty", tmp_path / "out")


def test_fsspec_urls_in_and_out(photo_tree):
    """SRC and OUT as fsspec URLs (memory://); the dataset opens and verifies from there."""
    import fsspec

    from pipeline.shards.verify import verify

    mem = fsspec.filesystem("memory")
    for p in sorted(photo_tree.rglob("*.jpg"))[:4]:
        mem.pipe_file(f"/src/{p.parent.name}/{p.name}", p.read_bytes())
    m = _convert("memory://src", "memory://out")
    assert m["totals"]["samples"] == 4 and m["source"]["uri"] == "memory://src"
    assert mem.exists("/out/index.parquet") and mem.exists("/out/codec/codec.pt")
    assert verify("memory://out").ok
    mem.rm("/src", recursive=True)
    mem.rm("/out", recursive=True)


def test_unforeseen_decoder_exception_is_one_failure_row(photo_tree, tmp_path, monkeypatch):
    import pipeline.convert.worker as pc

    real = pc.prepare_scales

    def flaky(data, policy):
        if len(data) == min(p.stat().st_size for p in photo_tree.rglob("*.jpg")):
            raise RuntimeError("decoder bug")
        return real(data, policy)

    monkeypatch.setattr(pc, "prepare_scales", flaky)
    m = _convert(photo_tree, tmp_path / "out")
    failures = pd.read_parquet(tmp_path / "out" / "failures.parquet")
    assert m["totals"]["samples"] == 7 and list(failures["reason"]) == ["decode-error"]
    assert "RuntimeError: decoder bug" in failures["detail"][0]


def test_resume_with_another_plan_is_refused(photo_tree, tmp_path):
    from pipeline.errors import DatasetError

    out = tmp_path / "out"
    _convert(photo_tree, out, shard_size=4)
    with pytest.raises(DatasetError, match=r"differs in: shard_size, shards\)"):  # and not preprocessing
        _convert(photo_tree, out, shard_size=3)
    (photo_tree / "odd" / "extra.jpg").write_bytes((photo_tree / "odd").glob("*.jpg").__next__().read_bytes())
    with pytest.raises(DatasetError, match="shards"):
        _convert(photo_tree, out, shard_size=4)


def test_stale_temp_files_of_a_killed_run_are_swept(photo_tree, tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / ".train-000000.tar.0123abcd.tmp").write_bytes(b"half a shard")
    _convert(photo_tree, out)
    assert not list(out.rglob("*.tmp"))


def test_relative_and_absolute_source_give_the_same_bytes(photo_tree, tmp_path, monkeypatch):
    _convert(photo_tree, tmp_path / "abs")
    monkeypatch.chdir(photo_tree.parent)
    _convert(f"./{photo_tree.name}/", tmp_path / "rel")
    assert tree_bytes(tmp_path / "abs") == tree_bytes(tmp_path / "rel")


@pytest.mark.parametrize("full_at", ["shards/train-000001.tar", "shards/train-000001.parquet",
                                     "index.parquet", "failures.parquet", "manifest.json"])
def test_disk_full_at_any_file_leaves_it_absent_and_a_rerun_matches(photo_tree, tmp_path, monkeypatch,
                                                                     full_at):
    from pipeline import storage

    clean = tmp_path / "clean"
    _convert(photo_tree, clean)
    real_open = open
    name = full_at.rsplit("/", 1)[-1]

    def full_disk_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if "w" in mode and name in str(path):
            def write(_data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    out = tmp_path / "out"
    monkeypatch.setattr(storage, "open", full_disk_open, raising=False)
    with pytest.raises(OSError, match=f"no space left on the device writing .*{name}") as err:
        _convert(photo_tree, out)
    assert err.value.errno == errno.ENOSPC
    assert "shards are kept" not in str(err.value)  # true of shards only; this may be the manifest
    assert "that file was not written" in str(err.value)
    assert not (out / full_at).exists() and not list(out.rglob("*.tmp"))  # nothing half written
    assert not (out / "manifest.json").exists()
    if full_at.startswith("shards/"):
        assert not (out / "shards" / "train-000001.parquet").exists()  # the shard is not done
    assert not (out / "convert.lease").exists()  # released on the way out
    monkeypatch.undo()
    _convert(photo_tree, out)
    assert tree_bytes(out) == tree_bytes(clean)


# -- a flaky object store: transient failures retried, persistent ones resumed ---------------------
def _files(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root):]: fs.cat_file(p) for p in sorted(fs.find(root)) if "/logs/" not in p}


def test_conversion_through_a_flaky_store_writes_the_clean_bytes(photo_tree, flaky):
    _convert(photo_tree, "memory://retry-clean/out")
    flaky.fail_every = 3  # a third of all PUTs and GETs fail once
    _convert(photo_tree, "flaky://retry-flaky/out")
    assert flaky.failures > 5
    assert _files("flaky://retry-flaky/out") == _files("memory://retry-clean/out")


def test_a_store_that_keeps_failing_stops_the_run_and_a_rerun_resumes(photo_tree, flaky):
    _convert(photo_tree, "memory://retry-clean2/out")
    flaky.fail_matching = "train-000001.tar"
    with pytest.raises(OSError, match="train-000001.tar failed 5 times"):
        _convert(photo_tree, "flaky://retry-stuck/out")
    fs = fsspec.filesystem("flaky")
    assert not fs.exists("/retry-stuck/out/shards/train-000001.parquet")  # not counted as done
    assert not fs.exists("/retry-stuck/out/manifest.json")
    flaky.fail_matching = ""
    _convert(photo_tree, "flaky://retry-stuck/out")
    assert _files("flaky://retry-stuck/out") == _files("memory://retry-clean2/out")
