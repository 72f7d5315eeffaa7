"""The VOC reader on a small hand-made tree, masks in the shards, and the detection scenes."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import SourceError
from pipeline.images import ImagePolicy
from pipeline.shards.verify import verify
from pipeline.sources import detect_format, list_source
from pipeline.sources.voc import VOC_CLASSES
from pipeline.tasks.scenes import SceneTask, make_scene_task


def _xml(w, h, objects, size=True):
    objs = "".join(
        f"<object><name>{n}</name><truncated>{t}</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>"
        "</object>" for n, b, d, t in objects)
    sz = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>x.jpg</filename>{sz}{objs}</annotation>"


def make_voc(root, ids_train, ids_val):
    """VOCdevkit/VOC2007 with: a difficult box (a), an image without objects (b), a mask with
    ignore pixels (a), a truncated box (c), XML that is not XML (bad), an annotation whose box
    leaves the image (out), a listed id without an image (gone), one without XML (noxml)."""
    voc = root / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationClass"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ("a", "b", "c", "bad", "out", "noxml"):
        pixels = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{i}.jpg")
    (voc / "Annotations" / "a.xml").write_text(_xml(80, 60, [("dog", (1, 1, 40, 30), 1, 0),
                                                             ("cat", (41, 31, 80, 60), 0, 0)]))
    (voc / "Annotations" / "b.xml").write_text(_xml(80, 60, []))
    (voc / "Annotations" / "c.xml").write_text(_xml(80, 60, [("person", (10, 5, 20, 25), 0, 1)]))
    (voc / "Annotations" / "bad.xml").write_text("<annotation><size>")
    (voc / "Annotations" / "out.xml").write_text(_xml(80, 60, [("dog", (10, 10, 90, 20), 0, 0)]))
    (voc / "Annotations" / "gone.xml").write_text(_xml(80, 60, []))
    mask = np.zeros((60, 80), np.uint8)
    mask[0:30, 0:40] = VOC_CLASSES.index("dog") + 1
    mask[30:60, 40:80] = VOC_CLASSES.index("cat") + 1
    mask[29:31, :] = 255  # the void band
    m = Image.fromarray(mask, "P")
    m.putpalette([v for i in range(256) for v in (i, i, i)])
    m.save(voc / "SegmentationClass" / "a.png")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in ids_train))
    (voc / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in ids_val))
    return voc, mask


def test_voc_reader_targets_and_every_listed_id_accounted_for(tmp_path):
    make_voc(tmp_path, ["a", "b", "bad", "gone", "noxml"], ["c", "out"])
    assert detect_format(str(tmp_path)) == "voc"
    listing = list_source("voc", str(tmp_path))
    assert listing.classes == VOC_CLASSES
    items = {i.key: i for i in listing.items}
    assert set(items) == {"a", "b", "c"} and items["c"].split == "val"
    a = json.loads(items["a"].targets)
    # 1-based inclusive pixel boxes → normalised: (xmin - 1) / w … xmax / w
    assert a["boxes"][0] == {"label": VOC_CLASSES.index("dog"), "xyxy": [0.0, 0.0, 0.5, 0.5],
                             "flags": {"difficult": 1, "truncated": 0}}
    assert a["boxes"][1]["xyxy"] == [0.5, 0.5, 1.0, 1.0] and a["size"] == [80, 60]
    assert json.loads(items["b"].targets)["boxes"] == []
    assert json.loads(items["c"].targets)["boxes"][0]["flags"]["truncated"] == 1
    assert items["a"].mask.endswith("SegmentationClass/a.png") and items["b"].mask is None
    reasons = {f.key: (f.reason, f.detail) for f in listing.failures}
    assert reasons["bad"][0] == "bad-annotation" and "not well-formed" in reasons["bad"][1]
    assert reasons["out"][0] == "bad-annotation" and "outside the 80x60 image" in reasons["out"][1]
    assert reasons["gone"][0] == "missing" and "JPEGImages/gone.jpg" in reasons["gone"][1]
    assert reasons["noxml"][0] == "missing" and "no Annotations/noxml.xml" in reasons["noxml"][1]
    assert list_source("voc", str(tmp_path), split="val").splits() == ["val"]
    with pytest.raises(SourceError, match="no test.txt"):
        list_source("voc", str(tmp_path), split="test")


def test_voc_converts_with_masks_box_counts_and_failures(tmp_path):
    voc, mask = make_voc(tmp_path, ["a", "b", "bad", "gone", "noxml"], ["c", "out"])
    out = tmp_path / "out"
    # size 30: the 80x60 image and its mask go to 40x30 (nearest for the mask)
    m = convert_dataset(ConvertJob(str(tmp_path), str(out), options=ConvertOptions(
        ImagePolicy(size=30, min_side=8), shard_size=4, order="sorted"))).manifest.raw  # a in shard 0
    assert m["totals"]["samples"] == 3 and m["totals"]["failures"] == 4
    index = pd.read_parquet(out / "index.parquet").set_index("key")
    assert index.loc["a", "num_boxes"] == 2 and index.loc["b", "num_boxes"] == 0
    assert index.loc["c", "num_boxes"] == 1
    assert pd.isna(index.loc["b", "mask_offset"]) and not pd.isna(index.loc["a", "mask_offset"])
    failures = pd.read_parquet(out / "failures.parquet")
    assert sorted(failures["reason"]) == ["bad-annotation", "bad-annotation", "missing", "missing"]
    with tarfile.open(out / "shards" / "train-000000.tar") as tf:  # plain tar reads the mask
        stored = np.asarray(Image.open(io.BytesIO(tf.extractfile("a.mask.png").read())))
    want = np.asarray(Image.fromarray(mask).resize((40, 30), Image.Resampling.NEAREST))
    assert stored.shape == (30, 40) and (stored == want).all()
    assert set(np.unique(stored)) == {0, VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1, 255}
    rep = verify(str(out))
    assert rep.faults == [] and rep.decoded == 3


def test_a_mask_of_the_wrong_size_or_kind_fails_its_sample_with_the_reason(tmp_path):
    voc, _ = make_voc(tmp_path, ["a", "c"], ["b"])
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(voc / "SegmentationClass" / "a.png")
    Image.new("RGB", (80, 60)).save(voc / "SegmentationClass" / "c.png")
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(tmp_path), str(out), options=ConvertOptions(shard_size=4)))
    failures = pd.read_parquet(out / "failures.parquet").set_index("key")
    assert "the mask is 10x10 px, the image 80x60" in failures.loc["a", "detail"]
    assert "a class mask is a palette (P) or grey (L) PNG" in failures.loc["c", "detail"]
    assert set(failures["reason"]) == {"bad-annotation"}
    assert list(pd.read_parquet(out / "index.parquet")["key"]) == ["b"]


def test_detection_scenes_have_exact_boxes_and_masks_and_rebuild_byte_for_byte(tmp_path):
    task = SceneTask(train=12, val=3, size=128, min_side=24, max_side=60, difficult_below=28,
                     truncate_p=0.3, empty_p=0.2)
    meta = make_scene_task(tmp_path / "a", task)
    make_scene_task(tmp_path / "b", task)
    for p in sorted((tmp_path / "a").rglob("*.*")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes(), p
    listing = list_source("auto", str(tmp_path / "a"))
    assert listing.classes == tuple(meta["classes"]) and not listing.failures
    assert len(listing.items) == 15 and meta["novel"] == meta["classes"][-3:]
    seen = {"difficult": 0, "truncated": 0, "empty": 0}
    for it in listing.items:
        t = json.loads(it.targets)
        mask = np.asarray(Image.open(it.mask))
        seen["empty"] += not t["boxes"]
        for b in t["boxes"]:
            x0, y0, x1, y1 = (round(v * 128) for v in b["xyxy"])
            inside = mask[y0:y1, x0:x1]
            # the box is tight: the object's class (or its void outline) touches all four sides
            hit = (inside == b["label"] + 1) | (inside == 255)
            assert hit[0].any() and hit[-1].any() and hit[:, 0].any() and hit[:, -1].any()
            assert (inside == b["label"] + 1).any()
            seen["difficult"] += b["flags"]["difficult"]
            seen["truncated"] += b["flags"]["truncated"]
            if b["flags"]["difficult"]:
                assert min(x1 - x0, y1 - y0) < 28
        assert set(np.unique(mask)) <= {0, 255, *(b["label"] + 1 for b in t["boxes"])}
    assert seen == {k: meta["counts"][k] for k in seen} and all(seen.values())


def test_an_annotation_for_another_image_size_fails_its_sample(tmp_path):
    voc, _ = make_voc(tmp_path, ["a", "c"], ["b"])
    (voc / "Annotations" / "c.xml").write_text(_xml(100, 60, [("person", (10, 5, 20, 25), 0, 0)]))
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(tmp_path), str(out), options=ConvertOptions(shard_size=4)))
    failures = pd.read_parquet(out / "failures.parquet").set_index("key")
    assert failures.loc["c", "reason"] == "bad-annotation"
    assert "annotation is for a 100x60 image, the image decodes to 80x60" in failures.loc["c", "detail"]
