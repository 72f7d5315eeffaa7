"""`latents convert` refuses options that cannot make sense, records one canonical command in
the manifest, and a run whose lease was taken stops at its next write."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.convert import ConvertJob, ConvertOptions, LocalExecutor, convert_dataset
from pipeline.convert.driver import NullObserver
from pipeline.shards.lease import LEASE_FILE, LeaseLost


def _run(*args: str):
    return CliRunner().invoke(app, ["convert", *args, "--executor", "local", "--no-progress"])


@pytest.mark.parametrize("extra, message", [
    (["--size", "5"], "--size 5 is below this codec's minimum of 16 px"),
    (["--workers", "2"], "--workers and --address are for --executor ray"),
])
def test_options_that_cannot_work_are_refused_in_one_line(photo_tree, tmp_path, extra, message):
    out = tmp_path / "out"
    res = _run(str(photo_tree), str(out), *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 2  # one message (the console may wrap it once)
    assert not (out / "manifest.json").exists() and not list(out.glob("shards/*"))


def test_zero_ray_workers_is_refused(photo_tree, tmp_path):
    res = CliRunner().invoke(app, ["convert", str(photo_tree), str(tmp_path / "out"), "--workers", "0",
                                   "--no-progress"])
    assert res.exit_code == 2 and "--workers must be at least 1" in res.output


@pytest.mark.parametrize("where", ["same", "inside", "inside via a relative path"])
def test_out_equal_to_or_inside_src_is_refused(photo_tree, tmp_path, monkeypatch, where):
    out = {"same": str(photo_tree), "inside": str(photo_tree / "latents")}.get(where)
    if out is None:
        monkeypatch.chdir(photo_tree)
        out = "./latents"
    before = sorted(p.relative_to(photo_tree) for p in photo_tree.rglob("*"))
    res = _run(str(photo_tree), out)
    assert res.exit_code == 2, res.output
    assert "SRC" in res.output and "choose an OUT outside SRC" in res.output
    assert sorted(p.relative_to(photo_tree) for p in photo_tree.rglob("*")) == before  # nothing written


def test_out_beside_src_with_a_common_prefix_is_fine(photo_tree, tmp_path):
    """`/x/photos-out` is not inside `/x/photos`."""
    res = _run(str(photo_tree), f"{photo_tree}-out")
    assert res.exit_code == 0, res.output


def test_relative_and_absolute_paths_give_the_same_manifest_through_the_cli(photo_tree, tmp_path,
                                                                             monkeypatch):
    """The manifest records the command canonically (absolute paths, every option that decides
    the bytes); the command as typed goes to logs/."""
    a = _run(str(photo_tree), str(tmp_path / "abs"), "--shard-size", "4")
    monkeypatch.chdir(tmp_path)
    b = _run(f"./{photo_tree.relative_to(tmp_path)}/", "rel", "--shard-size=4", "--threads", "2")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    abs_m, rel_m = ((tmp_path / d / "manifest.json").read_bytes() for d in ("abs", "rel"))
    cmd = json.loads(abs_m)["command"]
    assert cmd[:4] == ["latents", "convert", str(photo_tree), "OUT"]
    assert cmd[cmd.index("--shard-size") + 1] == "4" and "--executor" not in cmd and "--threads" not in cmd
    assert abs_m == rel_m
    assert json.loads(next((tmp_path / "rel" / "logs").iterdir()).read_text())["command"]  # as typed


def test_relative_and_absolute_out_give_byte_identical_manifests(photo_tree, tmp_path, monkeypatch):
    first = _run(str(photo_tree), str(tmp_path / "out"), "--shard-size", "4")
    data = (tmp_path / "out" / "manifest.json").read_bytes()
    (tmp_path / "out" / "manifest.json").unlink()  # rerun: the manifest is written again
    monkeypatch.chdir(tmp_path)
    again = _run(f"{photo_tree.relative_to(tmp_path)}", "out", "--shard-size=4")
    assert first.exit_code == 0 and again.exit_code == 0
    assert (tmp_path / "out" / "manifest.json").read_bytes() == data


class _Thief(NullObserver):
    """Takes OUT's lease over once the first shard is written, as a second run would."""

    def __init__(self, out):
        self.out = out

    def shard_done(self, done: int) -> None:
        if done == 1:
            now = time.time()
            (self.out / LEASE_FILE).write_text(json.dumps({"host": "node-9", "pid": 99, "run_id": "thief",
                                                           "started": now, "heartbeat": now}))


def test_a_run_whose_lease_was_taken_stops_at_its_next_write(photo_tree, tmp_path):
    out = tmp_path / "out"
    job = ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4))
    with pytest.raises(LeaseLost, match="taken over by another .*host node-9, pid 99.*before writing "
                                        "shard train-000001"):
        convert_dataset(job, LocalExecutor(), _Thief(out))
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["train-000000.parquet",
                                                                   "train-000000.tar"]
    assert not (out / "manifest.json").exists()
    assert json.loads((out / LEASE_FILE).read_text())["run_id"] == "thief"  # left to its owner


def test_the_old_option_name_still_works_with_a_deprecation_line(photo_tree, tmp_path):
    """`--arch` named a codec here and a network in `train`: now --codec-arch and --model."""
    res = _run(str(photo_tree), str(tmp_path / "out"), "--arch", "bmshj2018-hyperprior")
    assert res.exit_code == 0, res.output
    assert "--arch is deprecated here; use --codec-arch" in res.output
    both = _run(str(photo_tree), str(tmp_path / "o2"), "--arch", "mbt2018-mean", "--codec-arch",
                "bmshj2018-hyperprior")
    assert both.exit_code == 2 and "give --codec-arch only" in both.output
