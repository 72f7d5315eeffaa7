"""Each reader: targets right, quirks handled, every listed input accounted for."""

import json

import pandas as pd
import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.sources import detect_format, list_source
from tests.sources.fixtures import WNIDS, make_imagenet, make_openimages, make_uri_list


def _convert(src, out, **kw):
    job = ConvertJob(str(src), str(out), options=ConvertOptions(shard_size=3), **kw)
    return convert_dataset(job).manifest.raw


def _accounted(out, expected):
    index = pd.read_parquet(out / "index.parquet")
    failures = pd.read_parquet(out / "failures.parquet")
    assert len(index) + len(failures) == expected
    assert set(index["key"]).isdisjoint(failures["key"])
    return index, failures


def test_imagenet_layout_with_quirks(tmp_path):
    truth = make_imagenet(tmp_path / "in")
    assert detect_format(str(tmp_path / "in")) == "imagenet"
    listing = list_source("imagenet", str(tmp_path / "in"))
    assert listing.classes == ("n01443537", "n01440764", "n01484850")  # LOC_synset_mapping order
    m = _convert(tmp_path / "in", tmp_path / "out")
    assert set(m["splits"]) == {"train", "val"}
    index, failures = _accounted(tmp_path / "out", truth["train"] + truth["val"])
    assert list(failures["reason"]) == ["no-label"]  # the unlabelled val image, named
    train = index[index["split"] == "train"]
    assert len(train) == 6 and set(train["source_mode"]) >= {"CMYK", "L"}  # quirks decoded
    png_named_jpeg = train[train["key"] == "n01443537_2"].iloc[0]
    assert png_named_jpeg["label_name"] == "n01443537" and png_named_jpeg["label"] == 0
    for i, wnid in truth["val_labels"].items():
        row = index[index["key"] == f"ILSVRC2012_val_{i:08d}"].iloc[0]
        assert row["label_name"] == wnid and row["label"] == listing.classes.index(wnid)


def test_imagenet_val_in_wnid_folders(tmp_path):
    make_imagenet(tmp_path / "in")
    (tmp_path / "in" / "LOC_val_solution.csv").unlink()
    for f in (tmp_path / "in" / "val").iterdir():
        f.unlink()
    (tmp_path / "in" / "val" / WNIDS[2]).mkdir()
    (tmp_path / "in" / "train" / WNIDS[2] / f"{WNIDS[2]}_1.JPEG").rename(
        tmp_path / "in" / "val" / WNIDS[2] / "ILSVRC2012_val_00000009.JPEG")
    listing = list_source("imagenet", str(tmp_path / "in"), split="val")
    assert [(i.key, i.label_name) for i in listing.items] == [("ILSVRC2012_val_00000009", WNIDS[2])]


def test_openimages_multilabel_negatives_and_boxes(tmp_path):
    truth = make_openimages(tmp_path / "in")
    assert detect_format(str(tmp_path / "in")) == "openimages"
    m = _convert(tmp_path / "in", tmp_path / "out")
    assert m["classes"] == ["/m/011k07", "/m/01bjv", "/m/0199g"]
    index, _ = _accounted(tmp_path / "out", truth["train"] + truth["validation"])
    t = json.loads(index[index["key"] == "000a1249af2bc5f0"].iloc[0]["targets"])
    assert t["positive"] == [1] and t["negative"] == [2]  # Confidence 0 stays negative
    assert t["boxes"] == [{"label": 1, "xyxy": [0.1, 0.2, 0.6, 0.9],
                           "flags": {"IsDepiction": 0, "IsGroupOf": 0, "IsInside": 0,
                                     "IsOccluded": 0, "IsTruncated": 1}}]
    v = json.loads(index[index["key"] == "0001eeaf4aed83f9"].iloc[0]["targets"])
    assert v == {"positive": [2], "negative": [], "boxes": []}
    assert json.loads(index[index["key"] == "001a995c1bd1f5b1"].iloc[0]["targets"])["positive"] == []


def test_uri_list_with_labels_and_a_missing_file(tmp_path, photo_tree):
    lst = make_uri_list(tmp_path / "list", photo_tree)
    assert detect_format(str(lst)) == "uris"
    m = _convert(lst, tmp_path / "out")
    assert m["classes"] == ["even", "odd"]
    index, failures = _accounted(tmp_path / "out", 5)
    assert list(failures["reason"]) == ["missing"] and "FileNotFoundError" in failures["detail"][0]
    assert set(index["label_name"]) <= {"even", "odd"} and index["label"].notna().all()


def test_uri_list_without_uri_column_is_a_clear_error(tmp_path):
    from pipeline.errors import SourceError

    (tmp_path / "l.csv").write_text("path\nx.jpg\n")
    with pytest.raises(SourceError, match="no 'uri' column"):
        list_source("uris", str(tmp_path / "l.csv"))


def test_imagenet_val_labels_from_the_devkit(tmp_path):
    """ILSVRC2012_validation_ground_truth.txt holds devkit IDs (not sorted-wnid indices)."""
    import numpy as np
    from scipy.io import savemat

    make_imagenet(tmp_path / "in")
    (tmp_path / "in" / "LOC_val_solution.csv").unlink()
    kit = tmp_path / "in" / "ILSVRC2012_devkit_t12" / "data"
    kit.mkdir(parents=True)
    # devkit order differs from sorted order: ID 1 is the shark, 2 the tench, 3 the goldfish
    syn = np.zeros((3,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for i, w in enumerate([WNIDS[2], WNIDS[0], WNIDS[1]]):
        syn[i] = (i + 1, w)
    savemat(kit / "meta.mat", {"synsets": syn})
    (kit / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n3\n2\n1\n")
    listing = list_source("imagenet", str(tmp_path / "in"), split="val")
    got = {i.key: i.label_name for i in listing.items}
    assert got == {"ILSVRC2012_val_00000001": WNIDS[2], "ILSVRC2012_val_00000002": WNIDS[1],
                   "ILSVRC2012_val_00000003": WNIDS[0], "ILSVRC2012_val_00000004": WNIDS[2]}


def test_uri_listed_three_times_gets_three_distinct_keys(tmp_path, photo_tree):
    f = sorted(photo_tree.rglob("*.jpg"))[0]
    (tmp_path / "l.csv").write_text(f"uri\n{f}\n{f}\n{f}\n")
    keys = [i.key for i in list_source("uris", str(tmp_path / "l.csv")).items]
    assert len(keys) == len(set(keys)) == 3
