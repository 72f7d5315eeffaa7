"""The order shards are cut in: hashed by default (classes mixed in every shard, so a
streaming loader's shuffle sees near-random batches), sorted on request and for every
dataset started before the option existed, which resumes in the order it began with."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.convert.plan import order_key
from pipeline.errors import ConfigError, DatasetError
from pipeline.images import ImagePolicy
from pipeline.shards.layout import Layout
from tests.trees import tree_bytes


def _tree(root, classes=4, per=6):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per):
            Image.fromarray((rng.random((32, 48, 3)) * 255).astype("uint8")).save(d / f"{c}-{i:02d}.png")
    return root


def _convert(src, out, order=None):
    return convert_dataset(ConvertJob(str(src), str(out), options=ConvertOptions(
        ImagePolicy(size=0), shard_size=6, order=order)))


def test_hashed_shards_mix_the_classes_sorted_ones_do_not(tmp_path):
    src = _tree(tmp_path / "src")
    _convert(src, tmp_path / "hashed")
    _convert(src, tmp_path / "sorted", "sorted")
    classes = {}
    for name in ("hashed", "sorted"):
        index = pd.read_parquet(tmp_path / name / "index.parquet")
        classes[name] = index.groupby("shard")["label"].nunique().tolist()
        plan = json.loads((tmp_path / name / "plan.json").read_text())
        assert plan.get("order") == ("hashed" if name == "hashed" else None)  # sorted: as before
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert ("--order" in manifest["command"]) == (name == "hashed")
    assert classes["sorted"] == [1, 1, 1, 1] and min(classes["hashed"]) >= 2
    same = {k: v for k, v in tree_bytes(tmp_path / "hashed").items() if k.startswith("shards/")}
    _convert(src, tmp_path / "again")
    assert same == {k: v for k, v in tree_bytes(tmp_path / "again").items() if k.startswith("shards/")}


def test_a_dataset_begun_sorted_resumes_sorted(tmp_path):
    src, out = _tree(tmp_path / "src"), tmp_path / "out"
    _convert(src, out, "sorted")  # what every dataset was before --order: no order in plan.json
    whole = tree_bytes(out)
    os.remove(Layout.at(str(out)).shard_index("train-000002"))  # as if killed before that shard
    _convert(src, out)  # no --order: the plan's own
    assert {k: v for k, v in tree_bytes(out).items() if k.startswith("shards/")} == \
        {k: v for k, v in whole.items() if k.startswith("shards/")}
    with pytest.raises(DatasetError, match="order"):
        _convert(src, out, "hashed")
    with pytest.raises(ConfigError, match="--order"):
        order_key("random")


def test_the_other_order_on_resume_is_refused_by_name_and_uri_lists_keep_theirs(tmp_path, photo_tree):
    from tests.sources.fixtures import make_uri_list

    src, out = _tree(tmp_path / "src"), tmp_path / "out"
    _convert(src, out)  # hashed
    with pytest.raises(DatasetError, match="differs in: order"):
        _convert(src, out, "sorted")
    lst = make_uri_list(tmp_path / "list", photo_tree)
    with pytest.raises(ConfigError, match="own order"):
        convert_dataset(ConvertJob(str(lst), str(tmp_path / "uris"), options=ConvertOptions(order="hashed")))
    with pytest.raises(ConfigError, match="--order"):
        ConvertOptions(order="shuffled")
