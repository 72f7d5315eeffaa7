import shutil

import pytest

from pipeline.codec import checkpoint
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.shards.verify import verify
from tests.conftest import tiny_checkpoint


@pytest.fixture()
def dataset(photo_tree, tmp_path):
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    return out


def test_clean_dataset_verifies(dataset):
    rep = verify(str(dataset))
    assert rep.ok and rep.shards == 2 and rep.decoded == 8


def test_sample_decodes_only_that_many(dataset):
    assert verify(str(dataset), sample=3).decoded == 3


def test_flipped_byte_in_a_shard_is_named(dataset):
    tar = sorted((dataset / "shards").glob("*.tar"))[1]
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # inside the first member's data
    tar.write_bytes(bytes(data))
    rep = verify(str(dataset))
    assert not rep.ok
    assert {f.shard for f in rep.faults} == {tar.stem}
    assert any("sha256" in f.problem for f in rep.faults)
    assert any(f.key for f in rep.faults)  # the damaged sample is named too


def test_swapped_codec_is_caught(dataset, tmp_path):
    checkpoint.save(tiny_checkpoint("mbt2018-mean", N=64, M=96), str(tmp_path / "other.pt"))
    shutil.copy(tmp_path / "other.pt", dataset / "codec" / "codec.pt")
    rep = verify(str(dataset))
    assert not rep.ok
    assert any("fingerprint mismatch" in f.problem for f in rep.faults)
