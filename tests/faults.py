"""Faults on purpose: an in-memory object store whose calls fail on demand, odd tar members."""

from __future__ import annotations

import errno
import tarfile

from fsspec.implementations.memory import MemoryFileSystem


def odd_member(kind: str) -> tuple[tarfile.TarInfo, bytes | None]:
    """A tar member that is no sample file: a symlink, a hard link, a path climbing out
    (``dotdot``) or absolute, a folder, or any other ``kind`` a plain odd file."""
    info = tarfile.TarInfo({"dotdot": "../escape.latent", "absolute": "/etc/passwd.latent"}.get(
        kind, "odd.latent"))
    data: bytes | None = b"x" * 10
    if kind == "symlink":
        info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/passwd", None
    elif kind == "hardlink":
        info.type, info.linkname, data = tarfile.LNKTYPE, "missing.latent", None
    elif kind == "folder":
        info.type, data = tarfile.DIRTYPE, None
    else:
        info.size = len(data)
    return info, data


class Crash(BaseException):
    """The process dies here (a kill, a power cut): nothing in the library may catch it."""


class FlakyFS(MemoryFileSystem):
    """An in-memory object store whose PUTs and GETs fail on demand (S3's SlowDown, resets),
    or that "crashes" the writer at its n-th PUT. Register it as protocol ``flaky``."""

    protocol = "flaky"
    fail_every = 0  # every n-th PUT/GET fails once (0: never)
    fail_matching = ""  # PUTs of paths containing this fail every time
    fail_reading = ""  # GETs of paths containing this fail every time (a dead link)
    crash_at_put = 0  # the n-th PUT from now raises Crash (0: never)
    calls = failures = puts = 0

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith("flaky://"):
            path = path[len("flaky://"):]
        return super()._strip_protocol(path)

    @classmethod
    def reset(cls) -> None:
        cls.fail_every, cls.fail_matching, cls.fail_reading, cls.crash_at_put = 0, "", "", 0
        cls.calls = cls.failures = cls.puts = 0

    @classmethod
    def _maybe_fail(cls, path: str, writing: bool) -> None:
        cls.calls += 1
        if writing:
            cls.puts += 1
            if cls.crash_at_put and cls.puts == cls.crash_at_put:
                raise Crash(f"killed while putting {path}")
        if writing and cls.fail_matching and cls.fail_matching in path:
            cls.failures += 1
            raise OSError(errno.EIO, f"An error occurred (SlowDown) putting {path}")
        if not writing and cls.fail_reading and cls.fail_reading in path:
            cls.failures += 1
            raise ConnectionResetError(f"connection reset by peer reading {path}")
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
