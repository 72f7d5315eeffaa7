"""Transient storage failures are retried with backoff; permanent ones fail at once. (A whole
conversion through a flaky store: tests/jobs/test_convert.py.)"""

import errno

import pytest

from pipeline import storage as retry
from pipeline.storage import is_transient, with_retries


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
