"""One writer per OUT: the conversion lease."""

import json
import socket
import subprocess
import sys
import time

import pytest

from pipeline.shards.layout import Layout
from pipeline.shards.lease import LEASE_FILE, ConvertLease, LeaseHeld


def _plant(root, host, pid, heartbeat_age, run_id="someone-else"):
    now = time.time()
    (root / LEASE_FILE).write_text(json.dumps({"host": host, "pid": pid, "run_id": run_id,
                                               "started": now - 3600, "heartbeat": now - heartbeat_age}))


def test_held_while_writing_and_released_after(tmp_path):
    with ConvertLease(Layout.at(str(tmp_path))) as lease:
        held = json.loads((tmp_path / LEASE_FILE).read_text())
        assert held["host"] == socket.gethostname() and held["run_id"] == lease.info.run_id
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_live_lease_refuses_a_second_run_naming_the_first(tmp_path):
    _plant(tmp_path, "gpu-node-7", 4242, heartbeat_age=5)
    with pytest.raises(LeaseHeld, match="host gpu-node-7, pid 4242") as err:
        ConvertLease(Layout.at(str(tmp_path))).acquire()
    assert "last heartbeat 5 s ago" in str(err.value)
    assert json.loads((tmp_path / LEASE_FILE).read_text())["pid"] == 4242  # left as it was


def test_a_stale_lease_is_taken_over(tmp_path, caplog):
    _plant(tmp_path, "gpu-node-7", 4242, heartbeat_age=500)
    with ConvertLease(Layout.at(str(tmp_path)), stale_after=120) as lease:
        assert json.loads((tmp_path / LEASE_FILE).read_text())["run_id"] == lease.info.run_id
    assert "taking over the stale lease" in caplog.text


def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _plant(tmp_path, socket.gethostname(), int(dead.stdout), heartbeat_age=1)
    with ConvertLease(Layout.at(str(tmp_path))) as lease:
        assert lease.current().run_id == lease.info.run_id


def test_heartbeat_renews_and_notices_a_takeover(tmp_path):
    with ConvertLease(Layout.at(str(tmp_path)), stale_after=10, beat_every=0.05) as lease:
        first = lease.current().heartbeat
        time.sleep(0.3)
        assert lease.current().heartbeat > first
        # A beat that read our lease just before the plant writes ours back over the thief's
        # (no compare-and-swap on object stores); the thief then plants again, as its own
        # acquire would after finding the lease fresh. Within a few beats this run sees it.
        deadline = time.monotonic() + 10
        while not lease.lost and time.monotonic() < deadline:
            _plant(tmp_path, "elsewhere", 1, heartbeat_age=0, run_id="thief")
            time.sleep(0.3)
        assert lease.lost and lease.lost.run_id == "thief"
    assert json.loads((tmp_path / LEASE_FILE).read_text())["run_id"] == "thief"  # not removed: not ours


def test_on_an_object_store_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    with ConvertLease(Layout.at("memory://lease-test/out")):
        assert fs.exists("/lease-test/out/convert.lease")
        with pytest.raises(LeaseHeld, match="another `latents convert`"):
            ConvertLease(Layout.at("memory://lease-test/out")).acquire()
    assert not fs.exists("/lease-test/out/convert.lease")
