"""URLs carrying tokens, signatures and passwords: the images convert, and not one byte of any
secret reaches the dataset (tars, indices, ledger, manifest, plan, logs), keys included."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from pipeline.convert import ConvertJob, convert_dataset

SECRETS = ("tok3nSECRET", "sigSECRET.part2", "credSECRET", "passSECRET")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test output stays readable
        pass


@pytest.fixture()
def http_root(tmp_path, photo_tree):
    """The photo tree (and one file without an extension) on a loopback HTTP server."""
    root = tmp_path / "www"
    shutil.copytree(photo_tree, root)
    first = sorted(root.rglob("*.jpg"))[0]
    shutil.copy(first, root / "img2noext")
    shutil.copy(first, root / "photo.v2.jpg")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def test_no_secret_reaches_any_byte_of_the_dataset(http_root, tmp_path):
    root, base = http_root
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))[:3]
    rows = [f"{base}/img2noext?token={SECRETS[0]}",
            f"{base}/photo.v2.jpg?X-Amz-Credential={SECRETS[2]}&X-Amz-Signature={SECRETS[1]}",
            f"http://user:{SECRETS[3]}@127.0.0.1:{base.rsplit(':', 1)[1]}/{files[0]}",
            f"{base}/{files[1]}?token={SECRETS[0]}#frag",
            f"{base}/{files[1]}?token=other",  # the same path again: told apart, not by its token
            f"{base}/{files[2]}"]
    lst = tmp_path / "list.csv"
    lst.write_text("uri\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(lst), str(out), command=("latents", "convert", str(lst), str(out))))

    index = pq.read_table(out / "index.parquet").to_pylist()
    keys = sorted(r["key"] for r in index)
    assert len(index) == len(rows) and len(set(keys)) == len(rows)
    assert "img2noext" in keys
    assert any(k.startswith("photo_v2-") for k in keys)
    seen = 0
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        cells = _strings(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else []
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} in {path.relative_to(out)}"
            assert not any(secret in c for c in cells), f"{secret} in a cell of {path.relative_to(out)}"
        seen += 1
    assert seen >= 6  # manifest, plan, index, failures, a shard's tar and index, logs, codec
    assert (out / "plan.json").is_file() and any((out / "logs").iterdir())
