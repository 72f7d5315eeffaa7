"""The fast rANS coder (``native/rans.c``), compiled on first use and called by ctypes.

It writes exactly CompressAI's bytes and decodes CompressAI's streams to exactly the symbols
CompressAI's own decoder returns, from numpy buffers (no per-call list marshalling), by
bisection instead of a linear search, without the GIL (ctypes releases it), and never reads
or writes outside its buffers.

The shared library is built once per machine with the system C compiler (``$CC`` or ``cc``)
into ``$LATENT_SHARDS_BUILD`` (default ``~/.cache/latent-shards/build``, else the temp
directory), named by a hash of the source, so a changed source is rebuilt and concurrent
first uses do not collide. Without a compiler, ``available()`` is False and the codec keeps
CompressAI's coder (same output, slower); ``LATENT_SHARDS_FAST_RANS=0`` forces that.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from pipeline.errors import CodecError, ContainerError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "native" / "rans.c"
ERRORS = {
    -1: "the stream ended before every symbol was decoded",
    -2: "a CDF index outside the tables",
    -3: "an escaped value too long to be genuine",
    -4: "a CDF table with an empty interval",
    -5: "the output buffer is too small",
    -6: "a value too far outside its table to be escaped (|value| >= 2^27)",
}
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def build_dirs() -> list[Path]:
    """Where the library is built: $LATENT_SHARDS_BUILD, else the user cache, else the temp dir."""
    if os.environ.get("LATENT_SHARDS_BUILD"):
        return [Path(os.environ["LATENT_SHARDS_BUILD"])]
    return [Path.home() / ".cache" / "latent-shards" / "build",
            Path(tempfile.gettempdir()) / f"latent-shards-build-{os.getuid()}"]


def _private(path: Path) -> bool:
    """Owned by this user and writable by no one else: safe to load code from (or build in)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _compile() -> Path:
    # the tag names the source, the machine and the compiler, so a home folder shared between
    # architectures or compilers never loads a foreign library
    cc = shlex.split(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "")
    key = SOURCE.read_bytes() + repr((platform.machine(), cc)).encode()
    name = f"rans-{hashlib.sha256(key).hexdigest()[:16]}.so"
    for d in build_dirs():
        if _private(d) and _private(d / name):
            return d / name
    if not cc:
        raise OSError("no C compiler found (set $CC)")
    problems = []
    for d in build_dirs():
        out = d / name
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(d):
                raise OSError("not owned by this user, or writable by others")
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
        except OSError as exc:  # an unusable directory: try the next one
            problems.append(f"{d}: {exc}")
            continue
        os.close(fd)
        try:
            subprocess.run([*cc, "-O2", "-std=c99", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
                           check=True, capture_output=True, text=True)
            os.chmod(tmp, 0o700)
            os.replace(tmp, out)  # atomic: a concurrent build of the same source is harmless
            return out
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise OSError(f"{' '.join(cc)} failed on {SOURCE}: {detail}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError("no private, writable build directory: " + "; ".join(problems))


def _load() -> ctypes.CDLL | None:
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is None and _failed is None:
            if os.environ.get("LATENT_SHARDS_FAST_RANS", "1") == "0":
                _failed = "disabled by LATENT_SHARDS_FAST_RANS=0"
                return None
            try:
                lib = ctypes.CDLL(str(_compile()))
                f = lib.ls_rans_decode
                f.restype = ctypes.c_int
                f.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int32, ctypes.c_void_p]
                g = lib.ls_rans_encode
                g.restype = ctypes.c_int64
                g.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                              ctypes.c_void_p, ctypes.c_int64]
                _lib = lib
            except OSError as exc:
                _failed = str(exc)
                log.warning("fast rANS coder unavailable (%s); using CompressAI's coder", exc)
    return _lib


def _lib_or_raise() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError(f"fast rANS coder unavailable: {_failed}")
    return lib


def available() -> bool:
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _failed


class FastTables:
    """One entropy model's CDF tables as contiguous int32 arrays (made once)."""

    def __init__(self, quantized_cdf, cdf_length, offset):
        self.cdf = np.ascontiguousarray(np.asarray(quantized_cdf, dtype=np.int32))
        self.sizes = np.ascontiguousarray(np.asarray(cdf_length, dtype=np.int32).reshape(-1))
        self.offsets = np.ascontiguousarray(np.asarray(offset, dtype=np.int32).reshape(-1))
        if self.cdf.ndim != 2 or len(self.cdf) != len(self.sizes) or len(self.sizes) != len(self.offsets):
            raise ValueError(f"inconsistent CDF tables: cdf {self.cdf.shape}, sizes {self.sizes.shape}, "
                             f"offsets {self.offsets.shape}")

    def escapes(self, values: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """The escape payload (zig-zag distance past the table) of each value its table cannot
        code directly, in order; empty when every value fits."""
        idx = np.asarray(indexes, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.sizes)):
            raise CodecError(f"entropy coding failed: {ERRORS[-2]}")
        v = np.asarray(values, dtype=np.int64).reshape(-1) - self.offsets[idx]
        top = self.sizes[idx].astype(np.int64) - 2
        esc = (v < 0) | (v >= top)
        return np.where(v < 0, -2 * v - 1, 2 * (v - top))[esc]

    def encode(self, values: np.ndarray, indexes: np.ndarray) -> bytes:
        """CompressAI's ``encode_with_indexes`` bytes for ``values`` coded with tables ``indexes``."""
        lib = _lib_or_raise()
        v = np.ascontiguousarray(values, dtype=np.int32).reshape(-1)
        idx = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        if v.shape != idx.shape:
            raise ValueError(f"{v.size} values but {idx.size} indexes")
        # at most one word per rANS put: 1 per value, 1 + 1 + 7 more for an escaped one, 2 to flush
        capacity = 2 + v.size + 10 * self.escapes(v, idx).size
        buf = np.empty(capacity, dtype=np.uint32)
        words = lib.ls_rans_encode(v.ctypes.data, idx.ctypes.data, v.size, self.cdf.ctypes.data,
                                   self.cdf.shape[1], self.sizes.ctypes.data, self.offsets.ctypes.data,
                                   len(self.sizes), buf.ctypes.data, capacity)
        if words < 0:
            raise CodecError(f"entropy coding failed: {ERRORS.get(int(words), f'error {words}')}")
        return buf[capacity - words:].tobytes()

    def decode(self, string: bytes, indexes: np.ndarray) -> np.ndarray:
        lib = _lib_or_raise()
        idx = np.ascontiguousarray(indexes, dtype=np.int32)
        out = np.empty(idx.shape, dtype=np.int32)
        rc = lib.ls_rans_decode(string, len(string), idx.ctypes.data, idx.size,
                                self.cdf.ctypes.data, self.cdf.shape[1], self.sizes.ctypes.data,
                                self.offsets.ctypes.data, len(self.sizes), out.ctypes.data)
        if rc:
            raise ContainerError(f"entropy decoding failed: {ERRORS.get(rc, f'error {rc}')}")
        return out
