"""The COCO reader on a small hand-made tree: boxes, crowd RLE, polygons, class masks."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import SourceError
from pipeline.images import ImagePolicy
from pipeline.shards.verify import verify
from pipeline.sources import detect_format, list_source


def make_coco(root):
    """val2017 with: two objects with polygons (one inside the other's box), a crowd
    annotation as uncompressed RLE, an image without objects, a degenerate box, an image the
    folder lacks."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    for name in ("one.jpg", "empty.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "val2017" / name)
    crowd = np.zeros((40, 60), np.uint8, order="F")
    crowd[30:38, 2:12] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    counts = []  # uncompressed RLE, as COCO stores crowd regions
    bits = crowd.flatten(order="F")
    run, cur = 0, 0
    for b in bits:
        if b != cur:
            counts.append(run)
            run, cur = 0, b
        run += 1
    counts.append(run)
    data = {
        "images": [{"id": 1, "file_name": "one.jpg", "width": 60, "height": 40},
                   {"id": 2, "file_name": "empty.jpg", "width": 60, "height": 40},
                   {"id": 3, "file_name": "gone.jpg", "width": 60, "height": 40}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 5, 40, 30], "iscrowd": 0,
             "area": 1200, "segmentation": [[5, 5, 45, 5, 45, 35, 5, 35]]},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [20, 10, 10, 10], "iscrowd": 0,
             "area": 100, "segmentation": [[20, 10, 30, 10, 30, 20, 20, 20]]},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [2, 30, 10, 8], "iscrowd": 1,
             "area": float(mask_utils.area(rle)), "segmentation": {"size": [40, 60], "counts": counts}},
            {"id": 13, "image_id": 1, "category_id": 18, "bbox": [50, 1, 0.5, 9], "iscrowd": 0,
             "area": 1, "segmentation": []},
        ],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return data


def test_coco_reader_boxes_crowd_and_accounting(tmp_path):
    make_coco(tmp_path)
    assert detect_format(str(tmp_path)) == "coco"
    listing = list_source("coco", str(tmp_path))
    assert listing.classes == ("car", "dog")  # category-id order
    items = {i.key: i for i in listing.items}
    assert set(items) == {"one", "empty"} and items["one"].split == "val"
    t = json.loads(items["one"].targets)
    assert [b["label"] for b in t["boxes"]] == [0, 1, 0] and t["dropped_boxes"] == 1
    assert t["boxes"][0]["xyxy"] == [5 / 60, 5 / 40, 45 / 60, 35 / 40]
    assert [b["flags"]["crowd"] for b in t["boxes"]] == [0, 0, 1]
    assert json.loads(items["empty"].targets)["boxes"] == []
    (f,) = listing.failures
    assert f.key == "gone" and f.reason == "missing" and "val2017/ does not hold" in f.detail
    with pytest.raises(SourceError, match="no instances file for split 'train'"):
        list_source("coco", str(tmp_path), split="train")


def test_coco_class_masks_match_pycocotools(tmp_path):
    data = make_coco(tmp_path)
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(tmp_path), str(out), options=ConvertOptions(
        ImagePolicy(size=0, min_side=8), shard_size=4)))
    with tarfile.open(out / "shards" / "val-000000.tar") as tf:
        stored = np.asarray(Image.open(io.BytesIO(tf.extractfile("one.mask.png").read())))
        assert np.asarray(Image.open(io.BytesIO(tf.extractfile("empty.mask.png").read()))).max() == 0
    # the reference: pycocotools' own annToMask per annotation, larger objects first
    coco = COCO(str(tmp_path / "annotations" / "instances_val2017.json"))
    want = np.zeros((40, 60), np.uint8)
    anns = sorted([a for a in data["annotations"] if a["segmentation"]],
                  key=lambda a: -a["bbox"][2] * a["bbox"][3])
    for a in anns:
        m = coco.annToMask(coco.anns[a["id"]]).astype(bool)
        want[m] = 255 if a["iscrowd"] else (0 if a["category_id"] == 3 else 1) + 1
    assert (stored == want).all()
    assert {0, 1, 2, 255} == set(np.unique(stored))  # car, dog drawn over it, crowd ignored
    index = pd.read_parquet(out / "index.parquet").set_index("key")
    assert index.loc["one", "num_boxes"] == 3 and index.loc["empty", "num_boxes"] == 0
    assert verify(str(out)).faults == []
