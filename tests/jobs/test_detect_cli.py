"""The detection commands and `eval cost` from the command line."""

import json

import pytest
import torch
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.errors import ConfigError
from pipeline.shards.dataset import LatentDataset
from pipeline.train.detect import DetectConfig
from tests.train.scenes import scenes_dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return scenes_dataset(tmp_path_factory.mktemp("cli-scenes"), train=10, val=2)


def test_train_detect_and_segment_commands_write_model_and_metrics(scenes, tmp_path):
    ds = scenes
    for task, key in (("detect", "ap50"), ("segment", "miou")):
        out = tmp_path / task
        res = CliRunner().invoke(app, ["train", task, "--data", str(ds), "--epochs", "1", "--batch-size", "2",
                                       "--window", "6", "--workers", "0", "--out", str(out)],
                                 terminal_width=200)
        assert res.exit_code == 0, res.output
        rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert 0 <= rec[key] <= 1 and f"{'AP50' if task == 'detect' else 'mIoU'}" in res.output
        saved = torch.load(out / "model.pt", weights_only=False)
        assert saved["classes"] == json.loads((scenes.parent / "voc" / "fewshot.json").read_text())["classes"]
    with pytest.raises(ConfigError, match="fasterrcnn-sresnet18"):
        DetectConfig(str(ds), "detect", arch="sresnet18")
    # the pixel baseline, from the source scenes
    out = tmp_path / "pixels"
    res = CliRunner().invoke(app, ["train", "detect", "--pixels", "--data", str(scenes.parent / "voc"),
                                   "--epochs", "1", "--batch-size", "2", "--window", "4", "--workers", "0",
                                   "--out", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert torch.load(out / "model.pt", weights_only=False)["arch"] == "fasterrcnn-resnet18"


@pytest.mark.slow
def test_fewshot_detect_command_writes_the_table(scenes, tmp_path):
    out = tmp_path / "fsd.json"
    novel = ",".join(LatentDataset.open(str(scenes)).manifest.classes[-2:])
    res = CliRunner().invoke(app, ["fewshot", "detect", "--data", str(scenes), "--novel", novel,
                                   "--base-epochs", "1", "--batch-size", "4", "--window", "6",
                                   "--workers", "0",
                                   "--shots", "1,2", "--seeds", "2", "--finetune-steps", "2",
                                   "--output", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert [row["k"] for row in r["table"]] == [1, 2] and len(r["runs"]) == 4
    assert all(0 <= run["novel_ap50"] <= 1 or run["novel_ap50"] != run["novel_ap50"] for run in r["runs"])
    assert "novel" in res.output and r["novel"] == novel.split(",")


def test_eval_cost_prints_and_writes_the_stages(tmp_path):
    res = CliRunner().invoke(app, ["eval", "cost", "--N", "32", "--M", "48", "--head", "sresnet18",
                                   "--output", str(tmp_path / "c.json")], terminal_width=200)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c.json").read_text())
    assert set(out["gpu_hours"]) == {"joint codec + task training (Eq. 6)", "convert the dataset",
                                     "train sresnet18 on ŷ", "(baseline) train resnet50 on pixels"}
    assert "GPU-hours" in res.output and all(v > 0 for v in out["gpu_hours"].values())


@pytest.mark.slow
@pytest.mark.ray
def test_detection_on_two_ray_train_workers(ray_cluster, scenes, tmp_path):
    """DDP over 2 CPU workers (gloo): each rank reads its share of the shards, rank 0
    evaluates and writes model.pt."""
    from jobs.train import run_detect_ray

    cfg = DetectConfig(str(scenes), "detect", epochs=1, batch_size=2, window=6, workers=0,
                       out=str(tmp_path / "ray"))
    res = run_detect_ray(cfg, workers=2, use_gpu=False)
    assert res.error is None
    saved = torch.load(tmp_path / "ray" / "model.pt", weights_only=False)
    assert saved["arch"] == "fasterrcnn-sresnet18"
    rec = json.loads((tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= rec["ap50"] <= 1
