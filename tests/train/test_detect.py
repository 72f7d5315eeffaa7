"""Detection and segmentation trained from ŷ: the commands end to end, and a detector that
overfits a handful of scenes (AP50 > 0.5)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.errors import ConfigError
from pipeline.train.detect import DetectConfig, train_detection
from tests.train.scenes import scenes_dataset


def test_train_detect_and_segment_commands_write_model_and_metrics(tmp_path):
    ds = scenes_dataset(tmp_path)
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
def test_a_detector_on_y_hat_overfits_a_handful_ofscenes_dataset(tmp_path):
    ds = scenes_dataset(tmp_path, train=4, val=1)
    cfg = DetectConfig(str(ds), "detect", epochs=50, batch_size=4, lr=0.02, window=8, workers=0,
                       val_split="train", eval_every=50)
    result = train_detection(cfg, log=lambda r: None)
    assert result["history"][-1]["ap50"] > 0.5
