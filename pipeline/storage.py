"""Storage at the bottom floor: every read and write of a file or object (any fsspec URL),
retried with backoff where the failure is transient, written whole or not at all.

Transient failures (object-store 5xx, SlowDown, connection resets, time-outs) are retried;
anything else — a missing file, a permission, a full disk — fails at once: retrying would only
delay the error the user has to act on. Every package may import this; it imports nothing
of the project's, only the standard library and fsspec.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: errno values of failures that a later attempt can get past
TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
                    errno.EAGAIN, errno.EBUSY, errno.EIO}
#: what object stores and their clients say when they are overloaded or briefly unavailable
TRANSIENT_WORDS = ("SlowDown", "Service Unavailable", "ServiceUnavailable", "InternalError",
                   "Internal Server Error", "RequestTimeout", "Throttl", "503", "500")
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed storage call may succeed if tried again."""
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return False
        if exc.errno in TRANSIENT_ERRNOS:
            return True
        return any(w in str(exc) for w in TRANSIENT_WORDS)
    return False


#: attempts and the first delay of ``with_retries`` (doubling, with jitter, capped at 8 s)
ATTEMPTS, FIRST_DELAY, MAX_DELAY = 5, 0.5, 8.0


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None,
                 first_delay: float | None = None) -> T:
    """``fn()``, tried up to ``attempts`` times while it fails transiently; the last error is
    raised with the number of attempts added to its message."""
    attempts = attempts or ATTEMPTS
    delay = FIRST_DELAY if first_delay is None else first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified right below
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise OSError(getattr(exc, "errno", None) or errno.EIO,
                              f"{what} failed {attempts} times, last: {type(exc).__name__}: {exc}") from exc
            wait = min(MAX_DELAY, delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.warning("%s failed (%s: %s); retrying in %.1f s (%d/%d)", what, type(exc).__name__, exc,
                        wait, attempt, attempts)
            time.sleep(wait)
    raise AssertionError("unreachable")


def atomic_write(url: str, data: bytes) -> None:
    """Write ``data`` so that ``url`` is either absent or complete, never half-written.

    Local files go to a temp name in the same folder and are renamed; object stores get a
    single PUT, which is atomic there. Transient failures are retried with backoff
    (`with_retries`); a full disk or a permission error fails at once.
    """
    try:
        with_retries(lambda: _write_once(url, data), f"writing {url}")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device writing {url}; free some space and "
                          "rerun the same command (that file was not written, nothing is half-written, "
                          "and what was written before it is kept)") from exc
        raise


def _write_once(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if "file" in fs.protocol:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)


def read_file(url: str) -> bytes:
    def once() -> bytes:
        with fsspec.open(url, "rb") as f:
            return f.read()

    return with_retries(once, f"reading {url}")


def exists(url: str) -> bool:
    def once() -> bool:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.exists(path)

    return with_retries(once, f"looking for {url}")
