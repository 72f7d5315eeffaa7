"""The `.latent` container: a small versioned binary wrapper around the coder's strings.

Layout (little endian)::

    magic "LTNT" | version u8 | coder u8 | flags u16 | fingerprint prefix 8 bytes
    image H, W u16 | padded H, W u16 | y C, h, w u16 | z C, h, w u16 (zeros: no z)
    string count u8 | per string: length u32, bytes | crc32 u32 of everything before it

The CRC makes a truncated or altered container a clean ``ContainerError`` instead of
undefined behaviour inside the C++ entropy decoder.
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
_HEAD = struct.Struct("<4sBBH8s10HB")
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
    downsample: int = 16

    @property
    def valid_hw(self) -> tuple[int, int]:
        """The part of the y grid that covers real pixels (the rest covers padding)."""
        return (math.ceil(self.image_hw[0] / self.downsample),
                math.ceil(self.image_hw[1] / self.downsample))

    def pack(self) -> bytes:
        if self.coder not in CODER_IDS:
            raise ContainerError(f"unknown coder {self.coder!r}; known: {sorted(CODER_IDS)}")
        if len(self.fingerprint_prefix) != 8:
            raise ContainerError("fingerprint prefix must be 8 bytes")
        dims = (*self.image_hw, *self.padded_hw, *self.y_shape, *(self.z_shape or (0, 0, 0)))
        if any(not 0 <= d < 65536 for d in dims):
            raise ContainerError(f"a dimension in {dims} does not fit the container (max 65535)")
        parts = [_HEAD.pack(MAGIC, CONTAINER_VERSION, CODER_IDS[self.coder], 0,
                            self.fingerprint_prefix, *dims, len(self.strings))]
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
        magic, version, coder_id, _flags, fp, *rest = _HEAD.unpack_from(body)
        dims, n = rest[:10], rest[10]
        if version != CONTAINER_VERSION:
            raise ContainerError(
                f"latent container version {version} is not supported (this latent-shards "
                f"reads version {CONTAINER_VERSION}); upgrade latent-shards"
            )
        if coder_id not in CODERS:
            raise ContainerError(f"latent container names unknown coder id {coder_id}")
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
                   None if z == (0, 0, 0) else z, tuple(strings))
