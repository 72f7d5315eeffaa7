"""TFA few-shot detection: k-shot draws, only the last layers move, the command's table."""

import json

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.shards.dataset import LatentDataset
from pipeline.train.detect import DetectConfig, build_model
from pipeline.train.fewshot_detect import (
    CosineBoxPredictor,
    FewShotDetectConfig,
    _grow_predictor,
    _support,
    finetune,
    novel_indices,
    sample_shots,
)
from tests.train.scenes import scenes_dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return scenes_dataset(tmp_path_factory.mktemp("fsd"), train=10, val=2)


def test_k_shot_draws_hold_their_class_and_reach_k(scenes):
    data = LatentDataset.open(str(scenes))
    rows = [r for r in data.index.to_pylist() if r["split"] == "train"]
    classes = data.manifest.classes
    for k, seed in ((1, 0), (2, 1)):
        chosen = sample_shots(rows, len(classes), k, seed)
        assert chosen == sample_shots(rows, len(classes), k, seed)  # seeded
        by_key = {r["key"]: json.loads(r["targets"])["boxes"] for r in rows}
        for c in range(len(classes)):
            held = sum(1 for b in by_key.values() for x in b if x["label"] == c)
            got = sum(sum(x["label"] == c for x in by_key[key]) for key, cs in chosen.items() if c in cs)
            assert got >= min(k, held)
            assert all(any(x["label"] == c for x in by_key[key]) for key, cs in chosen.items() if c in cs)
    with pytest.raises(ConfigError, match="novel classes unicorn"):
        novel_indices(classes, ("unicorn",))


def test_fine_tuning_changes_only_the_box_classifier_and_regressor(scenes):
    data = LatentDataset.open(str(scenes))
    classes = data.manifest.classes
    base = list(range(len(classes) - 3))
    cfg = FewShotDetectConfig(DetectConfig(str(scenes), "detect", batch_size=2, window=6, workers=0),
                              tuple(classes[-3:]), finetune_steps=3)
    model = build_model(cfg.base, data.manifest.latent_channels, len(base))
    old = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = _grow_predictor(old, len(classes), base, 20.0)
    new = model.roi_heads.box_predictor
    assert isinstance(new, CosineBoxPredictor) and new.cls_score.weight.shape[0] == len(classes) + 1
    # the base rows (and background) are stage 1's
    assert torch.equal(new.cls_score.weight[[0] + [c + 1 for c in base]], old.cls_score.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [r for r in data.index.to_pylist() if r["split"] == "train"]
    finetune(model, _support(data, sample_shots(rows, len(classes), 1, 0)), cfg, seed=0)
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("roi_heads.box_predictor.") for k in moved)
    assert {k for k in before if k.startswith("roi_heads.box_predictor.")} <= moved | {
        k for k in before if k.endswith("num_batches_tracked")}


def test_pixel_support_is_the_same_shots_with_the_same_boxes(scenes):
    """The pixel arm of few-shot detection: the same k-shot images, grids, crops and boxes as ŷ."""
    import random

    from pipeline.loader.targets import choose_crop
    from pipeline.train.fewshot_detect import _pixel_support
    from pipeline.train.pixel_detect import PixelDetectionDataset

    data = LatentDataset.open(str(scenes))
    rows = [r for r in data.index.to_pylist() if r["split"] == "train"]
    chosen = sample_shots(rows, len(data.manifest.classes), 2, 0)
    from pipeline.images import ImagePolicy

    pixels = PixelDetectionDataset(str(scenes.parent / "voc"), "train", None, policy=ImagePolicy(size=0))
    px_rows = [{"key": it.key, "targets": it.targets} for it in pixels.items]
    assert sample_shots(px_rows, len(pixels.classes), 2, 0) == chosen
    ys, ps = _support(data, chosen), _pixel_support(pixels, chosen)
    assert [s.grid for s in ys] == [s.grid for s in ps] and [s.classes for s in ys] == [s.classes for s in ps]
    rng = random.Random(3)
    for y, p in zip(ys, ps, strict=True):
        for _ in range(4):
            crop = choose_crop(y.grid, (6, 6), rng)
            assert p.cut(crop).shape[-2:] == tuple(16 * v for v in y.cut(crop).shape[-2:])
            a, b = y.target(crop), p.target(crop)
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_fewshot_detection_runs_on_pixels(scenes):
    """`fewshot detect --pixels`: base training and k-shot fine-tuning of a ResNet detector on the
    source's pixels, the table in the shape of ŷ's."""
    from pipeline.train.fewshot_detect import run_fewshot_detection

    classes = LatentDataset.open(str(scenes)).manifest.classes
    base = DetectConfig(str(scenes.parent / "voc"), "detect", "fasterrcnn-resnet18", epochs=1, batch_size=2,
                        window=4, workers=0, pixels=True, eval_every=1)
    r = run_fewshot_detection(FewShotDetectConfig(base, tuple(classes[-2:]), shots=(1,), seeds=(0,),
                                                  finetune_steps=2), log=lambda d: None)
    assert r["classes"] == list(classes) and [row["k"] for row in r["table"]] == [1]
    assert len(r["runs"]) == 1 and len(r["runs"][0]["ap50_per_class"]) == len(classes)
