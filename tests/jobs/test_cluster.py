"""Real cluster workflows against a head node this module starts (`ray start --head --block`
on 127.0.0.1) and stops: `latents convert --address auto`, and the README's `ray job submit`.
Both must write the very bytes the embedded run writes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.trees import tree_bytes

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="module")
def head():
    """A head node with the dashboard's HTTP server (job submission), in its own temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    # Ray 2.60 turns token authentication on whenever a token is around: make it explicit,
    # with this cluster's own token, for the head and every client (as the README says)
    token = Path(ray_tmp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONWARNINGS": "ignore", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token),
           # `python` on the PATH is this install's, as on a node with latent-shards installed
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(gcs, 120)
        _wait_port(dash, 120)
        yield env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # --block: ray start stops its node on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", ray_tmp], check=False)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, photo_tree_module):
    out = tmp_path_factory.mktemp("embedded") / "out"
    subprocess.run([sys.executable, "-m", "jobs.convert_cli", str(photo_tree_module), str(out),
                    "--shard-size", "3", "--workers", "2", "--no-progress"],
                   check=True, capture_output=True, cwd=ROOT,
                   env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    return out


@pytest.fixture(scope="module")
def photo_tree_module(tmp_path_factory):
    from PIL import Image

    from pipeline.tasks.photos import bundled_photos

    root = tmp_path_factory.mktemp("photos") / "photos"
    for i, p in enumerate(bundled_photos(colour_only=True)[:6]):
        d = root / ("even" if i % 2 == 0 else "odd")
        d.mkdir(parents=True, exist_ok=True)
        Image.open(p.path).convert("RGB").save(d / f"{p.name}.jpg", quality=90)
    return root


def _same(a: Path, b: Path) -> None:
    """Same dataset bytes; the manifests differ only in the command line that made them."""
    import json

    ta, tb = tree_bytes(a), tree_bytes(b)
    ma, mb = json.loads(ta.pop("manifest.json")), json.loads(tb.pop("manifest.json"))
    ma.pop("command"), mb.pop("command")
    assert ma == mb and ta == tb


def test_convert_on_a_running_cluster_with_address_auto(head, embedded, photo_tree_module, tmp_path):
    env, _, _ = head
    out = tmp_path / "out"
    res = subprocess.run([str(BIN / "latents"), "convert", str(photo_tree_module), str(out),
                          "--shard-size", "3", "--workers", "2", "--address", "auto", "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    _same(out, embedded)


def test_ray_job_submit_as_the_readme_shows(head, embedded, photo_tree_module, tmp_path):
    env, _, dashboard = head
    out = tmp_path / "out"
    res = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
         "python", "-m", "jobs.convert_cli", str(photo_tree_module), str(out), "--shard-size", "3",
         "--workers", "2", "--address", "auto", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "succeeded" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    _same(out, embedded)
