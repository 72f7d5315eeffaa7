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


def read_member(url: str, offset: int, size: int, name: str, tar_bytes: int | None = None) -> bytes:
    """One member's bytes by its index offset, without scanning the tar.

    An index from elsewhere is untrusted, so the 512-byte header just before ``offset`` must
    be a regular file named ``name`` of exactly ``size`` bytes, inside the ``tar_bytes`` the
    manifest gives: an offset into another member, a size larger than the member, or one
    past the tar is a `DatasetError`, never another sample's bytes or a huge read.
    """
    import fsspec

    from pipeline.errors import DatasetError
    from pipeline.shards.retry import with_retries

    where = f"{url}: the index's entry for {name} (offset {offset!r}, size {size!r})"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, size)) \
            or offset < tarfile.BLOCKSIZE or offset % tarfile.BLOCKSIZE or size < 0 \
            or (tar_bytes is not None and offset + size > tar_bytes):
        raise DatasetError(f"{where} does not point at a member of this {tar_bytes or '?'}-byte tar")

    def once() -> bytes:
        with fsspec.open(url, "rb") as f:
            f.seek(offset - tarfile.BLOCKSIZE)
            return f.read(tarfile.BLOCKSIZE + size)

    data = with_retries(once, f"reading {size} bytes at {offset} of {url}")
    try:
        head = tarfile.TarInfo.frombuf(data[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.TarError as exc:
        raise DatasetError(f"{where} does not follow a tar header ({exc})") from None
    want = name.encode()
    named = head.name == name or (len(want) > 100 and head.name.encode() == want[:100])
    if not head.isreg() or not named or head.size != size or len(data) != tarfile.BLOCKSIZE + size:
        raise DatasetError(f"{where} points at {head.name!r} ({head.size} bytes, type "
                           f"{head.type!r}), not at {name}; the index does not match its tar")
    return data[tarfile.BLOCKSIZE:]
