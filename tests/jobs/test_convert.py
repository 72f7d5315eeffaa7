"""`latents convert` from the command line: what a second run into a held OUT prints, a
retry of failed reads, the planning-footprint bench."""

from __future__ import annotations

import json

import fsspec

from pipeline.shards.dataset import LatentDataset


def test_a_second_run_into_the_same_out_refuses_naming_the_first(photo_tree, tmp_path):
    """A run holding OUT's lease (another host, heartbeat just now) keeps a second run out
    before it writes anything; once that lease is stale, the next run converts."""
    import time

    from typer.testing import CliRunner

    from jobs.cli import app

    out = tmp_path / "out"
    out.mkdir()
    lease = {"host": "node-3", "pid": 777, "run_id": "first", "started": time.time() - 60,
             "heartbeat": time.time()}
    (out / "convert.lease").write_text(json.dumps(lease))
    args = ["convert", str(photo_tree), str(out), "--executor", "local", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "host node-3, pid 777" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["convert.lease"]  # nothing else written
    lease["heartbeat"] = time.time() - 3600  # the first run died an hour ago
    (out / "convert.lease").write_text(json.dumps(lease))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert LatentDataset.open(str(out)).manifest.totals.samples == 8
    assert not (out / "convert.lease").exists()


def test_retry_failed_from_the_command_line(photo_tree, flaky):
    """`latents convert --retry-failed` on a source whose reads failed: the count it prints and
    the dataset it leaves."""
    from typer.testing import CliRunner

    from jobs.cli import app

    fs = fsspec.filesystem("flaky")
    for p in sorted(photo_tree.rglob("*.jpg")):
        fs.pipe_file(f"/cli-retry/src/{p.parent.name}/{p.name}", p.read_bytes())
    args = ["convert", "flaky://cli-retry/src", "flaky://cli-retry/out", "--executor", "local",
            "--no-progress", "--shard-size", "4"]
    flaky.fail_reading = "/odd/"
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "failed: read-error" in res.output, res.output
    flaky.fail_reading = ""
    res = CliRunner().invoke(app, [*args, "--retry-failed"])
    assert res.exit_code == 0, res.output
    assert "retried 4 failure(s): 4 converted now, 0 failed again" in res.output
    assert LatentDataset.open("flaky://cli-retry/out").manifest.totals.samples == 8


def test_bench_plan_rows_prints_the_planning_footprint(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    res = CliRunner().invoke(app, ["bench", "--plan-rows", "3000", "--output", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    figures = json.loads((tmp_path / "p.json").read_text())["plan"]
    assert figures["rows"] == 3000 and figures["shards"] == 3
    assert figures["peak_rss_mib"] >= figures["rss_before_mib"] > 0
