"""The typed manifest: read once, the same object from a conversion and from disk; a manifest
missing a part it needs is a DatasetError naming it."""

import json

import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import DatasetError
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.manifest import Manifest


def test_a_conversions_manifest_is_the_one_read_back(photo_tree, tmp_path):
    job = ConvertJob(str(photo_tree), str(tmp_path / "out"), options=ConvertOptions(shard_size=3))
    s = convert_dataset(job)
    m = LatentDataset.open(str(tmp_path / "out")).manifest
    assert m == s.manifest and m.raw == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m.totals.samples == sum(e.samples for e in m.shards) == 8
    assert m.classes == ("even", "odd") and m.splits_with_samples() == ["train"]
    assert [e.name for e in m.shards_of("train")] == ["train-000000", "train-000001", "train-000002"]
    assert m.latent_channels == m.codec["M"] and m.fingerprint == m.codec["fingerprint"]
    assert m.max_pixels == m.preprocessing["max_pixels"]


def test_a_manifest_without_a_part_is_named(photo_tree, tmp_path):
    convert_dataset(ConvertJob(str(photo_tree), str(tmp_path / "out")))
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    del raw["codec_checkpoint"]
    with pytest.raises(DatasetError, match="lacks 'codec_checkpoint'"):
        Manifest.from_json(raw)
