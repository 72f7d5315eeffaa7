"""Detection and segmentation trained from ŷ: the commands end to end, and a detector that
overfits a handful of scenes (AP50 > 0.5)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import ConfigError
from pipeline.images import ImagePolicy
from pipeline.scenes import SceneTask, make_scene_task
from pipeline.train.detect import DetectConfig, train_detection


def _scenes(root, train=4, val=2):
    make_scene_task(root / "voc", SceneTask(train=train, val=val, size=128, max_objects=2, min_side=40,
                                            max_side=70, truncate_p=0, empty_p=0, difficult_below=0))
    convert_dataset(ConvertJob(str(root / "voc"), str(root / "ds"),
                               options=ConvertOptions(ImagePolicy(size=0), shard_size=4)))
    return root / "ds"


def test_train_detect_and_segment_commands_write_model_and_metrics(tmp_path):
    ds = _scenes(tmp_path)
    for task, key in (("detect", "ap50"), ("segment", "miou")):
        out = tmp_path / task
        res = CliRunner().invoke(app, ["train", task, "--data", str(ds), "--epochs", "1", "--batch-size", "2",
                                       "--window", "6", "--workers", "0", "--out", str(out)],
                                 terminal_width=200)
        assert res.exit_code == 0, res.output
        rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert 0 <= rec[key] <= 1 and f"{'AP50' if task == 'detect' else 'mIoU'}" in res.output
        saved = torch.load(out / "model.pt", weights_only=False)
        assert saved["classes"] == json.loads((tmp_path / "voc" / "fewshot.json").read_text())["classes"]
    with pytest.raises(ConfigError, match="fasterrcnn-sresnet18"):
        DetectConfig(str(ds), "detect", arch="sresnet18")


@pytest.mark.slow
def test_a_detector_on_y_hat_overfits_a_handful_of_scenes(tmp_path):
    ds = _scenes(tmp_path, train=4, val=1)
    cfg = DetectConfig(str(ds), "detect", epochs=50, batch_size=4, lr=0.02, window=8, workers=0,
                       val_split="train", eval_every=50)
    result = train_detection(cfg, log=lambda r: None)
    assert result["history"][-1]["ap50"] > 0.5
