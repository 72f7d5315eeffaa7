"""One writer per OUT: the lease a conversion holds while it writes a latent dataset.

``OUT/convert.lease`` is a small JSON file: host, pid, a run id, when the run started and
its last heartbeat. A run takes the lease before it writes anything and renews the
heartbeat from a background thread; a second run into the same OUT finds a live lease and
refuses, naming the first. A lease whose heartbeat is older than ``stale_after`` seconds
(a run that died without releasing it), or whose pid no longer exists on this same host, is
taken over with a warning. A run whose lease was taken over (its heartbeat finds another
run's lease) stops with `LeaseLost` at its next write; shard workers check the lease file
before writing each shard (`check_holder`).

Object stores have no compare-and-swap, so after writing its lease a run reads it back and
goes on only if the run id is its own: two runs starting within the same instant both back
off or one wins, never both.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import fsspec

from pipeline.errors import ConfigError, DatasetError
from pipeline.shards.layout import Layout
from pipeline.storage import atomic_write, exists, read_file

log = logging.getLogger(__name__)

LEASE_FILE = "convert.lease"


class LeaseHeld(DatasetError):
    """Another run is writing this OUT."""


class LeaseLost(DatasetError):
    """Another run took this run's lease while it was writing: this run stops."""


def lost_message(root: str, other: LeaseInfo, what: str) -> str:
    return (f"the lease of {root} was taken over by another `latents convert` "
            f"({other.describe(time.time())}); this run stops before writing {what} and leaves "
            "OUT to that run")


def check_holder(layout: Layout, run_id: str, what: str) -> None:
    """Raise `LeaseLost` unless ``OUT/convert.lease`` is still run ``run_id``'s (or absent: a
    heartbeat writes it back). Shard workers, which do not hold the lease object, call this
    before each shard's writes."""
    url = layout.url(LEASE_FILE)
    try:
        other = LeaseInfo(**json.loads(read_file(url))) if exists(url) else None
    except (ValueError, TypeError, OSError):
        return  # unreadable: the holder's next heartbeat rewrites it
    if other is not None and other.run_id != run_id:
        raise LeaseLost(lost_message(layout.root, other, what))


@dataclass(frozen=True)
class LeaseInfo:
    host: str
    pid: int
    run_id: str
    started: float
    heartbeat: float

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return (f"host {self.host}, pid {self.pid}, started {started}, "
                f"last heartbeat {max(0.0, now - self.heartbeat):.0f} s ago")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class ConvertLease:
    """Hold ``OUT/convert.lease`` for the duration of a ``with`` block."""

    def __init__(self, layout: Layout, stale_after: float = 120.0, beat_every: float = 15.0):
        if beat_every >= stale_after:
            raise ConfigError("the heartbeat must come more often than a lease goes stale")
        self.url = layout.url(LEASE_FILE)
        self.root = layout.root
        self.stale_after, self.beat_every = stale_after, beat_every
        now = time.time()
        self.info = LeaseInfo(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: LeaseInfo | None = None  # the run that replaced this lease while it was held

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def check(self, what: str) -> None:
        """Raise `LeaseLost` if a heartbeat found this lease taken: called before each write."""
        if self.lost is not None:
            raise LeaseLost(lost_message(self.root, self.lost, what))

    # -- reading ---------------------------------------------------------------------------------
    def current(self) -> LeaseInfo | None:
        """The lease now in OUT, or None (also for an unreadable one, which nobody can renew)."""
        if not exists(self.url):
            return None
        try:
            return LeaseInfo(**json.loads(read_file(self.url)))
        except (ValueError, TypeError, OSError):
            return None

    def _holder_alive(self, other: LeaseInfo, now: float) -> bool:
        if now - other.heartbeat >= self.stale_after:
            return False
        if other.host == self.info.host and not _pid_alive(other.pid):
            return False
        return True

    # -- taking, renewing, releasing --------------------------------------------------------------
    def _write(self) -> None:
        atomic_write(self.url, (json.dumps(asdict(self.info), sort_keys=True) + "\n").encode())

    def acquire(self) -> ConvertLease:
        now = time.time()
        other = self.current()
        if other is not None and other.run_id != self.info.run_id:
            if self._holder_alive(other, now):
                raise LeaseHeld(
                    f"{self.root} is being written by another `latents convert` ({other.describe(now)}); "
                    f"wait for it to finish. If that run is dead, its lease goes stale "
                    f"{self.stale_after:.0f} s after its last heartbeat and the next run takes over "
                    f"(or delete {self.url})")
            log.warning("taking over the stale lease of %s (%s)", self.root, other.describe(now))
        self.info = LeaseInfo(self.info.host, self.info.pid, self.info.run_id, self.info.started, now)
        self._write()
        back = self.current()
        if back is None or back.run_id != self.info.run_id:
            raise LeaseHeld(f"{self.root}: another `latents convert` took the lease at the same moment"
                            + (f" ({back.describe(time.time())})" if back else "") + "; rerun later")
        self._thread = threading.Thread(target=self._beat, name="convert-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_every):
            try:
                cur = self.current()
                if cur is not None and cur.run_id != self.info.run_id:
                    self.lost = cur
                    log.error("the lease of %s was taken by another run (%s); this run stops at its "
                              "next write", self.root, cur.describe(time.time()))
                    return
                self.info = LeaseInfo(self.info.host, self.info.pid, self.info.run_id, self.info.started,
                                      time.time())
                self._write()
            except OSError as exc:  # a missed heartbeat is retried at the next beat
                log.warning("could not renew the lease of %s: %s", self.root, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        cur = self.current()
        if cur is not None and cur.run_id == self.info.run_id:
            fs, path = fsspec.core.url_to_fs(self.url)
            fs.rm(path)

    def __enter__(self) -> ConvertLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
