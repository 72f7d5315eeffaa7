"""Deterministic tar shards in memory, with each member's data offset for random access."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass

MTIME = 0  # fixed: identical inputs give identical bytes


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # where the member's data starts in the tar
    size: int


class TarBuilder:
    def __init__(self):
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes) -> Member:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), MTIME, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        # addfile works on a copy of `info`; the data is the last padded block run written.
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return Member(name, self._tar.offset - padded, len(data))

    def finish(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def read_member(url: str, offset: int, size: int) -> bytes:
    """One member's bytes by its index offset, without scanning the tar."""
    import fsspec

    from pipeline.shards.retry import with_retries

    def once() -> bytes:
        with fsspec.open(url, "rb") as f:
            f.seek(offset)
            return f.read(size)

    return with_retries(once, f"reading {size} bytes at {offset} of {url}")
