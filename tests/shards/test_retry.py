"""Transient storage failures are retried with backoff; permanent ones fail at once; a
conversion through a flaky object store still writes exactly the bytes of a clean one."""

import errno

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.shards import retry
from pipeline.shards.retry import is_transient, with_retries


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.0)


@pytest.mark.parametrize("exc, transient", [
    (ConnectionResetError("reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (OSError(errno.EIO, "An error occurred (SlowDown) when calling the PutObject operation"), True),
    (OSError("503 Service Unavailable"), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (FileNotFoundError("s3://b/x"), False),
    (PermissionError("denied"), False),
    (ValueError("not storage"), False),
])
def test_what_counts_as_transient(exc, transient):
    assert is_transient(exc) is transient


def _failing(times: int, exc: Exception):
    """A call that raises ``exc`` its first ``times`` calls, then returns "ok"."""
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "ok"

    return call, calls


def test_retries_until_it_works_and_gives_up_with_the_count():
    call, calls = _failing(2, ConnectionResetError("reset"))
    assert with_retries(call, "reading x") == "ok" and len(calls) == 3
    call, calls = _failing(99, ConnectionResetError("reset"))
    with pytest.raises(OSError, match="writing y failed 4 times, last: ConnectionResetError"):
        with_retries(call, "writing y", attempts=4)
    assert len(calls) == 4
    call, calls = _failing(99, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left") as err:
        with_retries(call, "writing z")
    assert len(calls) == 1 and err.value.errno == errno.ENOSPC  # a full disk is not retried


class FlakyFS(MemoryFileSystem):
    """An in-memory object store whose PUTs and GETs fail on demand (S3's SlowDown, resets)."""

    protocol = "flaky"
    fail_every = 0  # every n-th PUT/GET fails once (0: never)
    fail_matching = ""  # PUTs of paths containing this fail every time
    calls = failures = 0

    @classmethod
    def _maybe_fail(cls, path: str, writing: bool) -> None:
        cls.calls += 1
        if writing and cls.fail_matching and cls.fail_matching in path:
            cls.failures += 1
            raise OSError(errno.EIO, f"An error occurred (SlowDown) putting {path}")
        if cls.fail_every and cls.calls % cls.fail_every == 0:
            cls.failures += 1
            raise ConnectionResetError(f"connection reset while transferring {path}")

    def pipe_file(self, path, value, **kw):
        self._maybe_fail(path, True)
        return super().pipe_file(path, value, **kw)

    def _open(self, path, mode="rb", **kw):
        if "r" in mode:
            self._maybe_fail(path, False)
        return super()._open(path, mode, **kw)


@pytest.fixture()
def flaky():
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.fail_every, FlakyFS.fail_matching, FlakyFS.calls, FlakyFS.failures = 0, "", 0, 0
    yield FlakyFS
    FlakyFS.fail_every, FlakyFS.fail_matching = 0, ""


def _files(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root):]: fs.cat_file(p) for p in sorted(fs.find(root)) if "/logs/" not in p}


def test_conversion_through_a_flaky_store_writes_the_clean_bytes(photo_tree, flaky):
    from tests.jobs.test_convert import _convert

    _convert(photo_tree, "memory://retry-clean/out")
    flaky.fail_every = 3  # a third of all PUTs and GETs fail once
    _convert(photo_tree, "flaky://retry-flaky/out")
    assert flaky.failures > 5
    assert _files("flaky://retry-flaky/out") == _files("memory://retry-clean/out")


def test_a_store_that_keeps_failing_stops_the_run_and_a_rerun_resumes(photo_tree, flaky):
    from tests.jobs.test_convert import _convert

    _convert(photo_tree, "memory://retry-clean2/out")
    flaky.fail_matching = "train-000001.tar"
    with pytest.raises(OSError, match="train-000001.tar failed 5 times"):
        _convert(photo_tree, "flaky://retry-stuck/out")
    fs = fsspec.filesystem("flaky")
    assert not fs.exists("/retry-stuck/out/shards/train-000001.parquet")  # not counted as done
    assert not fs.exists("/retry-stuck/out/manifest.json")
    flaky.fail_matching = ""
    _convert(photo_tree, "flaky://retry-stuck/out")
    assert _files("flaky://retry-stuck/out") == _files("memory://retry-clean2/out")
