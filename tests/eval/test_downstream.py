"""`latents eval downstream`: every arm and start trained, equal-time figures from the same runs."""

import pytest

from pipeline.errors import ConfigError
from pipeline.eval.budget import equal_time
from pipeline.eval.downstream import DownstreamConfig
from tests.train.scenes import small_scenes


def test_equal_time_takes_each_arm_at_the_quickest_arms_budget_seed_by_seed():
    common = {"init": "scratch", "metric": "ap50"}
    rows = [{**common, "task": "detect", "arm": "rd ŷ", "bpp": 0.5,
             "curves": [[(10, 0.1), (20, 0.2), (30, 0.3)], [(12, 0.0), (25, 0.4), (33, 0.5)]]},
            {**common, "task": "detect", "arm": "pixels", "bpp": 2.0,
             "curves": [[(20, 0.2), (40, 0.6), (60, 0.7)], [(35, 0.1), (70, 0.9)]]},
            # another group: its own budgets (the pixels are the quicker arm there)
            {**common, "task": "segment", "arm": "rd ŷ", "bpp": 0.5, "curves": [[(50, 0.3)], [(50, 0.4)]]},
            {**common, "task": "segment", "arm": "pixels", "bpp": 2.0, "curves": [[(5, 0.1), (40, 0.2)],
                                                                                   [(45, 0.5)]]}]
    timed = equal_time(rows, lambda r: (r["task"], r["init"]), ("task", "arm"))
    got = {(r["task"], r["arm"]): r for r in timed}
    assert got["detect", "rd ŷ"]["budget_s"] == got["detect", "pixels"]["budget_s"] == [30, 33]
    assert got["detect", "rd ŷ"]["values"] == [0.3, 0.5]  # the quickest arm keeps its final figures
    assert got["detect", "pixels"]["values"] == [0.2, None] and got["detect", "pixels"]["mean"] == 0.2
    assert got["detect", "pixels"]["n"] == 1 and got["detect", "rd ŷ"]["n"] == 2
    assert got["segment", "pixels"]["budget_s"] == [40, 45]
    assert got["segment", "rd ŷ"]["values"] == [None, None] and got["segment", "rd ŷ"]["mean"] is None
    assert got["segment", "pixels"]["values"] == [0.2, 0.5]


def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="needs both --init-latent and --init-pixels"):
        DownstreamConfig("src", "work", inits=("pretrained",), init_latent="y.pt")
    with pytest.raises(ConfigError, match="--task is detect or segment"):
        DownstreamConfig("src", "work", tasks=("classify",))


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
