"""Retries with backoff for storage calls that fail transiently (object-store 5xx, SlowDown,
connection resets, time-outs). Anything else — a missing file, a permission, a full disk —
fails at once: retrying would only delay the error the user has to act on."""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

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
