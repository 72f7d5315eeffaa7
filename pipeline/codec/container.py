"""The `.latent` container: a small versioned binary wrapper around the coder's strings.

Layout (little endian)::

    magic "LTNT" | version u8 | coder u8 | flags u16 (0) | fingerprint prefix 8 bytes
    image H, W u16 | padded H, W u16 | y C, h, w u16 | z C, h, w u16 (zeros: no z)
    crc32 of the y symbols u32 | string count u8 | per string: length u32, bytes
    crc32 u32 of everything before it

The trailing CRC makes a truncated or altered container a clean ``ContainerError`` instead
of undefined behaviour inside the C++ entropy decoder. The symbol CRC lets the decoder prove
that it recovered exactly the encoder's symbols (it would not if its entropy parameters
differed from the encoder's), instead of silently returning garbage.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from pipeline.errors import ContainerError

MAGIC = b"LTNT"
CONTAINER_VERSION = 1
#: Coder ids are part of the format: never renumber, only append.
CODERS = {1: "compressai-ans"}
CODER_IDS = {v: k for k, v in CODERS.items()}
#: The most padded pixels a container may declare unless its reader is told otherwise: the
#: converter's ``--max-pixels`` default. Decoding allocates in proportion to the declared size
#: (index and mean grids over all of y), so a decoder refuses larger declarations before it
#: allocates anything; a dataset converted with a larger ``--max-pixels`` records that limit in
#: its manifest's preprocessing, and its readers allow it.
MAX_PIXELS = 50_000_000
_HEAD = struct.Struct("<4sBBH8s10HIB")
_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class LatentContainer:
    coder: str
    fingerprint_prefix: bytes  # first 8 bytes of the codec fingerprint
    image_hw: tuple[int, int]  # the encoded image, before padding
    padded_hw: tuple[int, int]
    y_shape: tuple[int, int, int]  # (M, h, w) over the padded image
    z_shape: tuple[int, int, int] | None
    strings: tuple[bytes, ...]
    symbols_crc: int = 0  # crc32 of the y symbols (int32, C order)

    @property
    def downsample(self) -> int:
        """Pixels per y element along each side (16 for the registered models)."""
        return self.padded_hw[0] // self.y_shape[1] if self.y_shape[1] else 0

    @property
    def valid_hw(self) -> tuple[int, int]:
        """The part of the y grid that covers real pixels (the rest covers padding)."""
        d = self.downsample
        return math.ceil(self.image_hw[0] / d), math.ceil(self.image_hw[1] / d)

    def pack(self) -> bytes:
        if self.coder not in CODER_IDS:
            raise ContainerError(f"unknown coder {self.coder!r}; known: {sorted(CODER_IDS)}")
        if len(self.fingerprint_prefix) != 8:
            raise ContainerError("fingerprint prefix must be 8 bytes")
        dims = (*self.image_hw, *self.padded_hw, *self.y_shape, *(self.z_shape or (0, 0, 0)))
        if any(not 0 <= d < 65536 for d in dims):
            raise ContainerError(f"a dimension in {dims} does not fit the container (max 65535)")
        parts = [_HEAD.pack(MAGIC, CONTAINER_VERSION, CODER_IDS[self.coder], 0,
                            self.fingerprint_prefix, *dims, self.symbols_crc, len(self.strings))]
        for s in self.strings:
            parts += [_LEN.pack(len(s)), s]
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes) -> LatentContainer:
        data = bytes(data)
        if len(data) < _HEAD.size + _CRC.size:
            raise ContainerError(f"latent container truncated: {len(data)} bytes")
        if data[:4] != MAGIC:
            raise ContainerError(f"not a latent container (magic {data[:4]!r}, expected {MAGIC!r})")
        body, (crc,) = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])
        if zlib.crc32(body) != crc:
            raise ContainerError("latent container corrupted or truncated: checksum mismatch")
        magic, version, coder_id, flags, fp, *rest = _HEAD.unpack_from(body)
        dims, sym_crc, n = rest[:10], rest[10], rest[11]
        if version != CONTAINER_VERSION:
            raise ContainerError(
                f"latent container version {version} is not supported (this latent-shards "
                f"reads version {CONTAINER_VERSION}); upgrade latent-shards"
            )
        if coder_id not in CODERS:
            raise ContainerError(f"latent container names unknown coder id {coder_id}")
        if flags:
            raise ContainerError(f"latent container sets unknown flags {flags:#x}")
        pos, strings = _HEAD.size, []
        for _ in range(n):
            if pos + _LEN.size > len(body):
                raise ContainerError("latent container truncated inside its string table")
            (size,) = _LEN.unpack_from(body, pos)
            pos += _LEN.size
            if pos + size > len(body):
                raise ContainerError("latent container truncated inside a string")
            strings.append(body[pos : pos + size])
            pos += size
        if pos != len(body):
            raise ContainerError(f"latent container has {len(body) - pos} trailing bytes")
        z = tuple(dims[7:10])
        return cls(CODERS[coder_id], fp, tuple(dims[0:2]), tuple(dims[2:4]), tuple(dims[4:7]),
                   None if z == (0, 0, 0) else z, tuple(strings), sym_crc)
