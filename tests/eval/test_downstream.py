"""`latents eval downstream`: every arm and start trained, equal-time figures from the same runs."""

import json

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.errors import ConfigError
from pipeline.eval.budget import equal_time
from pipeline.eval.downstream import DownstreamConfig
from pipeline.tasks.scenes import SceneTask, make_scene_task


def test_equal_time_takes_each_arm_at_the_quickest_arms_budget():
    common = {"task": "detect", "init": "scratch", "metric": "ap50"}
    rows = [{**common, "arm": "rd ŷ", "checkpoint": "x", "bpp": 0.5, "seconds_mean": 30.0,
             "curves": [[(10, 0.1), (20, 0.2), (30, 0.3)], [(12, 0.0), (25, 0.4), (33, 0.5)]]},
            {**common, "arm": "pixels", "checkpoint": None, "bpp": 2.0, "seconds_mean": 60.0,
             "curves": [[(20, 0.2), (40, 0.6), (60, 0.7)], [(35, 0.1), (70, 0.9)]]}]
    got = {r["arm"]: r for r in equal_time(rows, lambda r: (r["task"], r["init"]), ("arm", "bpp"))}
    assert got["rd ŷ"]["budget_s"] == got["pixels"]["budget_s"] == 30.0
    assert got["rd ŷ"]["values"] == [0.3, 0.4]  # the second seed's last epoch ran past the budget
    assert got["pixels"]["values"] == [0.2, None] and got["pixels"]["mean"] == 0.2


def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="needs both --init-latent and --init-pixels"):
        DownstreamConfig("src", "work", inits=("pretrained",), init_latent="y.pt")
    with pytest.raises(ConfigError, match="--task is detect or segment"):
        DownstreamConfig("src", "work", tasks=("classify",))


def small_scenes(root):
    make_scene_task(root, SceneTask(train=4, val=2, size=64, max_objects=2, min_side=24, max_side=40,
                                    truncate_p=0, empty_p=0, difficult_below=0))
    return root


def test_segmentation_runs_both_arms_and_a_finished_run_is_read_back(tmp_path):
    from pipeline.eval.downstream import evaluate_downstream

    cfg = DownstreamConfig(str(small_scenes(tmp_path / "voc")), str(tmp_path / "w"), tasks=("segment",),
                           seeds=1, epochs=1, batch_size=2, window=4, workers=0)
    r = evaluate_downstream(cfg)
    assert [row["arm"] for row in r["rows"]] == ["rd ŷ", "pixels"] and r["fewshot"] == []
    assert all(0 <= row["mean"] <= 1 and len(row["curves"][0]) == 1 for row in r["rows"])
    assert 0 < r["rows"][0]["bpp"] < r["rows"][1]["bpp"]  # ŷ against the source's own JPEG bytes
    saved = sorted((tmp_path / "w" / "runs").glob("*/metrics.jsonl"))
    assert len(saved) == 2
    again = evaluate_downstream(cfg)  # every run finished: read back, not trained again
    assert [row["values"] for row in again["rows"]] == [row["values"] for row in r["rows"]]
    assert [p.read_text() for p in saved] == [p.read_text() for p in sorted(
        (tmp_path / "w" / "runs").glob("*/metrics.jsonl"))]


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
