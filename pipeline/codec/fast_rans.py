"""The fast rANS coder (``native/rans.c``): an extension module built at install time, called by ctypes.

It writes exactly CompressAI's bytes and decodes CompressAI's streams to exactly the symbols
CompressAI's own decoder returns, from numpy buffers (no per-call list marshalling), by
bisection instead of a linear search, without the GIL (ctypes releases it), and never reads
or writes outside its buffers.

The C source is compiled when latent-shards is installed, as the extension module
``pipeline.codec._rans`` (``setup.py``; optional there, so an install without a C compiler
still succeeds). Where the module is missing, ``available()`` is False and the codec keeps
CompressAI's coder (same output, slower) after a one-line warning; ``LATENT_SHARDS_FAST_RANS=0``
forces that fallback.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading

import numpy as np

from pipeline.errors import CodecError, ContainerError

log = logging.getLogger(__name__)

MODULE = "pipeline.codec._rans"
LUT_SHIFT = 8  # as in rans.c: the decoder's start table has one entry per 2^8 cumulative values
LUT_SIZE = 1 << (16 - LUT_SHIFT)
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


def _library_path() -> str:
    """The installed extension module's shared object."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except ImportError:
        spec = None
    if spec is None or not spec.origin:
        raise OSError(f"the extension module {MODULE} is not built (no C compiler when latent-shards "
                      "was installed? reinstall with one: `make install`)")
    return spec.origin


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
                lib = ctypes.CDLL(_library_path())
                f = lib.ls_rans_decode
                f.restype = ctypes.c_int
                f.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
                g = lib.ls_rans_encode
                g.restype = ctypes.c_int64
                g.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                              ctypes.c_void_p, ctypes.c_int64]
                _lib = lib
            except (OSError, AttributeError) as exc:
                _failed = str(exc)
                log.warning("fast rANS coder unavailable (%s); using CompressAI's coder", exc)
    return _lib


def _lib_or_raise() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise CodecError(f"fast rANS coder unavailable: {_failed}")
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
            raise CodecError(f"inconsistent CDF tables: cdf {self.cdf.shape}, sizes {self.sizes.shape}, "
                             f"offsets {self.offsets.shape}")
        self.starts = self._starts()

    def _starts(self) -> np.ndarray:
        """The decoder's start table: row t, entry j = the last k in [0, size - 2] whose
        cdf[k] <= j·2^8, a lower bound of the symbol for every cumulative value in bucket j."""
        floors = np.arange(LUT_SIZE, dtype=np.int64) << LUT_SHIFT
        out = np.zeros((len(self.sizes), LUT_SIZE), dtype=np.uint16)
        for t, size in enumerate(self.sizes):
            if 2 <= size <= self.cdf.shape[1]:
                k = np.searchsorted(self.cdf[t, : size - 1], floors, side="right") - 1
                out[t] = np.clip(k, 0, size - 2)
        return np.ascontiguousarray(out)

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
            raise CodecError(f"{v.size} values but {idx.size} indexes")
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
                                self.offsets.ctypes.data, len(self.sizes), self.starts.ctypes.data,
                                out.ctypes.data)
        if rc:
            raise ContainerError(f"entropy decoding failed: {ERRORS.get(rc, f'error {rc}')}")
        return out
