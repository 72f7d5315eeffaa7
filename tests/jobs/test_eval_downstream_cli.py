"""`latents eval downstream` from the command line: every arm trained, the tables printed,
finished runs read back; bad detector options refused before any training."""

import json

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from tests.train.scenes import small_scenes


def test_bad_detector_options_are_refused_before_any_work(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "downstream", "--source", str(tmp_path), "--anchors", "32,x"])
    assert res.exit_code == 2 and "--anchors takes whole numbers" in res.output
    res = runner.invoke(app, ["eval", "downstream", "--source", str(tmp_path), "--anchors", "32,64"])
    assert res.exit_code == 2 and "one positive size per pyramid level P2–P6 (5), got 2" in res.output
    res = runner.invoke(app, ["train", "detect", "--data", str(tmp_path), "--fpn-from", "7"])
    assert res.exit_code == 2 and "--fpn-from is 2, 3 or 4" in res.output
    res = runner.invoke(app, ["train", "segment", "--data", str(tmp_path), "--roi-batch", "64"])
    assert res.exit_code == 2 and "`train detect` only" in res.output
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.slow
def test_command_trains_every_arm_and_reads_finished_runs_back(tmp_path):
    small_scenes(tmp_path / "voc")
    args = ["eval", "downstream", "--source", str(tmp_path / "voc"), "--work", str(tmp_path / "w"),
            "--seeds", "1", "--epochs", "1", "--batch-size", "2", "--window", "4", "--workers", "0",
            "--fewshot", str(tmp_path / "voc" / "fewshot.json"), "--shots", "1", "--fewshot-seeds", "1",
            "--finetune-steps", "2", "--output", str(tmp_path / "d.json")]
    res = CliRunner().invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "d.json").read_text())
    assert {(row["task"], row["arm"]) for row in r["rows"]} == {
        ("detect", "rd ŷ"), ("detect", "pixels"), ("segment", "rd ŷ"), ("segment", "pixels")}
    assert all(0 <= row["mean"] <= 1 and row["seconds_mean"] > 0 for row in r["rows"])
    assert len(r["equal_time"]) == 4 and [fs["arm"] for fs in r["fewshot"]] == ["rd ŷ", "pixels"]
    assert "equal training time" in res.output and "few-shot detection" in res.output
    # a second run reads every finished run and table back: the same figures
    res = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "again.json")], terminal_width=200)
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "again.json").read_text())
    assert [row["values"] for row in again["rows"]] == [row["values"] for row in r["rows"]]
    assert again["fewshot"] == r["fewshot"]
