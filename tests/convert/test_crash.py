"""A crash at any write: `verify` passes what is left or names the missing part, and a rerun
finishes to the bytes of an uninterrupted run. Each write of a small conversion is the crash
point once (the store is tests.faults.FlakyFS, which can die at its n-th PUT)."""

from __future__ import annotations

import fsspec
import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import DatasetError
from pipeline.images import ImagePolicy
from pipeline.shards.verify import verify
from tests.faults import Crash


def _files(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root):]: fs.cat_file(p) for p in sorted(fs.find(root)) if "/logs/" not in p}


def _job(src, out, retry=False):
    return ConvertJob(src, out, options=ConvertOptions(ImagePolicy(size=64), shard_size=2),
                      retry_failed=retry)


def _state_after_crash(out: str) -> str:
    """What verify makes of a crashed dataset: "ok", or the part it names."""
    try:
        rep = verify(out)
    except DatasetError as exc:
        assert "manifest.json not found" in str(exc), exc
        return "no manifest"
    if rep.ok:
        return "ok"
    named = {f.shard for f in rep.faults}
    assert named <= {"index.parquet", "failures.parquet"}, rep.faults
    return "stale " + ", ".join(sorted(named))


@pytest.fixture()
def small_src(photo_tree, flaky):
    fs = fsspec.filesystem("flaky")
    for p in sorted(photo_tree.rglob("*.jpg"))[:5]:
        fs.pipe_file(f"/crash/src/{p.parent.name}/{p.name}", p.read_bytes())
    return "flaky://crash/src"


def test_a_crash_at_any_write_of_a_conversion(small_src, flaky):
    convert_dataset(_job(small_src, "flaky://crash/ref"))
    reference = _files("flaky://crash/ref")
    flaky.puts = 0
    convert_dataset(_job(small_src, "flaky://crash/count"))
    writes = flaky.puts
    assert writes >= 10  # codec ×2, lease, plan, 3 shards ×2, index, ledger, manifest, log
    states = []
    for k in range(1, writes + 1):
        out = f"flaky://crash/at-{k}"
        flaky.puts, flaky.crash_at_put = 0, k
        with pytest.raises(Crash):
            convert_dataset(_job(small_src, out))
        flaky.crash_at_put = 0
        states.append(_state_after_crash(out))
        convert_dataset(_job(small_src, out))
        assert _files(out) == reference, f"crash at write {k}"
    assert states[-1] == "ok"  # the run log is the last write: the dataset was complete
    assert "no manifest" in states


def test_a_crash_at_any_write_of_a_retry(small_src, flaky):
    """The old manifest stands until the new one replaces it; verify names what is stale."""
    def failed_then_retried(out: str, crash_at: int = 0) -> None:
        flaky.fail_reading = "/odd/"
        convert_dataset(_job(small_src, out))
        flaky.fail_reading, flaky.puts, flaky.crash_at_put = "", 0, crash_at
        try:
            convert_dataset(_job(small_src, out, retry=True))
        finally:
            flaky.crash_at_put = 0

    failed_then_retried("flaky://crash/retry-ref")
    writes = flaky.puts
    reference = _files("flaky://crash/retry-ref")
    states = []
    for k in range(1, writes + 1):
        out = f"flaky://crash/retry-at-{k}"
        with pytest.raises(Crash):
            failed_then_retried(out, k)
        states.append(_state_after_crash(out))
        convert_dataset(_job(small_src, out, retry=True))  # the same command again
        assert _files(out) == reference, f"crash at write {k} of the retry"
    assert any(s.startswith("stale") for s in states), states
