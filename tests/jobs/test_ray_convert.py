"""Conversion on a real local Ray cluster (2 CPUs): same bytes as in-process, faults survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from jobs.convert_cli import run_convert
from jobs.ray_convert import RayOptions
from pipeline.convert import ConvertJob, ConvertOptions
from pipeline.shards.verify import verify
from tests.trees import tree_bytes

pytestmark = pytest.mark.ray


def _run(src, out, executor, **kw):
    job = ConvertJob(str(src), str(out), options=ConvertOptions(shard_size=1, batch_size=2),
                     command=("latents", "convert"), torch_threads=1, **kw)
    return run_convert(job, executor, RayOptions(workers=2))


def test_ray_output_is_byte_identical_to_in_process(ray_cluster, photo_tree, tmp_path):
    s = _run(photo_tree, tmp_path / "ray", "ray")
    assert s.converted == 8 and len({w["pid"] for w in s.workers}) == 2
    _run(photo_tree, tmp_path / "local", "local")
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def _worker_pids() -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ShardWorker" in cmd:
            out.append(p.info["pid"])
    return out


def test_killed_actor_is_retried_and_dataset_is_complete(ray_cluster, photo_tree, tmp_path):
    out = tmp_path / "out"
    killed = []

    def chaos():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            if list((out / "shards").glob("*.parquet")):
                pids = _worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.05)

    t = threading.Thread(target=chaos)
    t.start()
    s = _run(photo_tree, out, "ray")
    t.join()
    assert killed, "the chaos thread never found a worker to kill"
    assert s.manifest.totals.samples == 8
    rep = verify(str(out))
    assert rep.ok and rep.decoded == 8
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow  # three embedded Ray start-ups in subprocesses: about a minute here
def test_killed_driver_then_rerun_gives_identical_bytes(photo_tree, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "jobs.convert_cli", str(photo_tree), "OUT", "--shard-size", "1",
           "--workers", "1", "--torch-threads", "1", "--no-progress"]
    ref = tmp_path / "ref"
    ref.mkdir()
    subprocess.run(cmd, cwd=ref, env=env, check=True, capture_output=True)
    reference = tree_bytes(ref / "OUT")

    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run / "OUT" / "shards").glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it embeds
    proc.wait()
    assert not (run / "OUT" / "manifest.json").exists()
    subprocess.run(cmd, cwd=run, env=env, check=True, capture_output=True)
    assert tree_bytes(run / "OUT") == reference
    assert Path(run / "OUT" / "index.parquet").is_file()


@pytest.mark.slow  # three readers through Ray and S3: about 30 s here
def test_every_reader_through_ray_and_s3(ray_cluster, s3, photo_tree, tmp_path):
    import pandas as pd

    from tests.conftest import upload_tree
    from tests.sources.fixtures import make_imagenet, make_openimages, make_uri_list

    make_imagenet(tmp_path / "imagenet")
    s3.mkdir("ray-src")
    upload_tree(s3, tmp_path / "imagenet", "ray-src/imagenet")
    make_openimages(tmp_path / "oi")
    lst = make_uri_list(tmp_path / "list", photo_tree)
    cases = [("s3://ray-src/imagenet", "s3://ray-src/out-imagenet", 10),
             (str(tmp_path / "oi"), str(tmp_path / "out-oi"), 5),
             (str(lst), str(tmp_path / "out-uris"), 5)]
    for src, out, listed in cases:
        job = ConvertJob(src, out, options=ConvertOptions(shard_size=2))
        m = run_convert(job, "ray", RayOptions(workers=2)).manifest.raw
        assert m["totals"]["samples"] + m["totals"]["failures"] == listed, src
        rep = verify(out)
        assert rep.ok and rep.decoded == m["totals"]["samples"], (src, rep.faults)
        if not out.startswith("s3://"):
            index = pd.read_parquet(f"{out}/index.parquet")
            assert len(index) == m["totals"]["samples"]


@pytest.mark.slow  # a `ray start` head and an embedded Ray: about 20 s here
def test_embedded_default_stays_embedded_beside_a_stale_cluster_address(photo_tree, tmp_path):
    """`ray start` once ran here and was killed: its address file is still in Ray's temp dir.
    Plain `latents convert SRC OUT` (no --address) must start its own Ray, not join that one."""
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # Ray's socket paths must stay short
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6390\n")  # nobody listens
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    try:
        res = subprocess.run([sys.executable, "-m", "jobs.convert_cli", str(photo_tree),
                              str(tmp_path / "out"), "--shard-size", "4", "--workers", "1", "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert verify(str(tmp_path / "out")).ok
