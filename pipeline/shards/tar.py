"""Tar shards: written deterministically in memory, with each member's data offset for random
access; read back as a checked stream (`open_tar`, `tar_members`)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec

from pipeline.errors import DatasetError, redact
from pipeline.storage import with_retries

MTIME = 0  # fixed: identical inputs give identical bytes
BLOCK = tarfile.BLOCKSIZE
CHUNK = 2**20  # the most one read takes: a tar is streamed, never held whole
MAX_EXTENDED = 2**20  # a PAX or GNU long-name header larger than this is no header of ours
#: member types that carry no data blocks (tarfile reads them the same way)
NO_DATA = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
           tarfile.BLKTYPE)
#: headers that describe the next member (PAX, GNU long names) rather than being one
EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
KINDS = {tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link", tarfile.DIRTYPE: "a folder",
         tarfile.FIFOTYPE: "a FIFO", tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device"}


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


END = "the rest of this shard"  # what a fault that leaves no next header to read skips


class ShardFault(DatasetError):
    """A shard's tar is cut, longer or shorter than its manifest says, or holds a member (or a
    sample) that cannot be used. ``where`` names the shard, ``problem`` what is wrong, with
    the member or key; ``skips`` what a lenient reader loses to it ("" when nothing). URLs in
    both lose their credentials: the message goes to logs."""

    def __init__(self, where: str, problem: str, skips: str = ""):
        self.where, self.problem, self.skips = redact(where), redact(problem), skips
        super().__init__(f"{self.where}: {self.problem}")


class TarStream:
    """A tar read once, front to back, in reads of at most `CHUNK` bytes and never past the
    manifest's ``tar_bytes`` (``None``: no bound); what is read is hashed into ``sha256``
    when given, so checking a shard's checksum costs no second read."""

    def __init__(self, f, tar_bytes: int | None, sha256=None):
        self.f, self.limit, self.sha256, self.pos = f, tar_bytes, sha256, 0

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes, fewer only where the tar or the manifest's length ends."""
        if self.limit is not None:
            n = min(n, self.limit - self.pos)
        parts = []
        while n > 0:
            data = self.f.read(min(n, CHUNK))
            if not data:
                break
            if self.sha256 is not None:
                self.sha256.update(data)
            self.pos += len(data)
            n -= len(data)
            parts.append(data)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Read ``n`` bytes a chunk at a time and drop them; how many there were."""
        start = self.pos
        while self.pos - start < n and self.read(min(n - (self.pos - start), CHUNK)):
            pass
        return self.pos - start

    def rest(self) -> str:
        """Read up to the manifest's length; what is wrong with the tar's length ("" if
        nothing). One byte is read past it, only to tell a longer tar."""
        if self.limit is None:
            return ""
        self.skip(self.limit - self.pos)
        if self.pos < self.limit:
            return f"the tar is {self.pos} bytes, the manifest gives {self.limit}"
        if self.f.read(1):
            return (f"the tar is longer than the {self.limit} bytes its manifest gives; it is not "
                    "the shard that was converted")
        return ""


@contextmanager
def open_tar(url: str, tar_bytes: int | None, sha256=None) -> Iterator[TarStream]:
    """Shard ``url`` (any fsspec URL) opened as a `TarStream`; opening is retried like every
    storage call, a failure mid-stream is the caller's ``OSError``."""
    f = with_retries(lambda: fsspec.open(url, "rb").open(), f"opening {url}")
    try:
        yield TarStream(f, tar_bytes, sha256)
    finally:
        f.close()


def tar_members(stream: TarStream, where: str, on_fault: Callable[[ShardFault], None],
                keep: Callable[[str], bool] = lambda name: True) -> Iterator[tuple[Member, bytes | None]]:
    """Each regular sample file of a tar, in order, with its bytes (``None`` for those
    ``keep`` declines: read and dropped a chunk at a time).

    A tar from elsewhere is untrusted, and tarfile's stream mode ends quietly at a cut or
    damaged header, so the headers are walked here: a member with a path, a link, a folder,
    a device, a name without an extension or seen before is handed to ``on_fault`` and
    skipped; a cut, a header that is none, or a member claiming bytes past the manifest's
    ``tar_bytes`` too, and then nothing more is read. After the end-of-archive block the
    tar's length must be the manifest's. ``on_fault`` is the caller's policy: raise, log
    or record.
    """
    seen: set[str] = set()
    extended: dict[str, str] = {}  # PAX / GNU long-name records for the next header
    while True:
        at, block = stream.pos, stream.read(BLOCK)
        if len(block) < BLOCK:
            on_fault(ShardFault(where, _cut(stream, "inside a tar header" if block
                                            else "where a tar header should start"), END))
            return
        if not block.strip(b"\0"):  # the end-of-archive block
            if problem := stream.rest():
                on_fault(ShardFault(where, problem))
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            name, size = extended.pop("path", info.name), int(extended.pop("size", info.size))
        except (tarfile.HeaderError, ValueError) as exc:
            on_fault(ShardFault(where, f"the 512 bytes at byte {at} are not a tar header ({exc})", END))
            return
        extended.clear()
        has_data = info.type not in NO_DATA
        if size < 0 or (has_data and stream.limit is not None and stream.pos + size > stream.limit):
            on_fault(ShardFault(where, f"member {name!r} claims {size} bytes, past the end of the "
                                f"{stream.limit}-byte tar", END))
            return
        if info.type in EXTENDED:
            if size > MAX_EXTENDED or not _extended(stream, info.type, size, extended):
                on_fault(ShardFault(where, f"the extended header at byte {at} is cut or malformed", END))
                return
            continue
        if problem := _odd(name, info, seen):
            on_fault(ShardFault(where, problem, "this member"))
        seen.add(name)
        kept = not problem and keep(name)
        offset = stream.pos
        data = stream.read(size) if kept else None
        got = len(data) if kept else stream.skip(size if has_data else 0)
        if has_data and got < size:
            on_fault(ShardFault(where, _cut(stream, f"inside member {name!r} (whose data runs to byte "
                                            f"{offset + size})"), END))
            return
        stream.skip(-size % BLOCK if has_data else 0)
        if not problem:
            yield Member(name, offset, size), data


def _cut(stream: TarStream, place: str) -> str:
    short = stream.limit is not None and stream.pos < stream.limit
    return f"the tar ends at byte {stream.pos}, {place}" + (
        f"; the manifest gives {stream.limit} bytes" if short else "")


def _odd(name: str, info: tarfile.TarInfo, seen: set[str]) -> str:
    """What makes member ``name`` no sample file, or ""."""
    if "/" in name or name in ("", ".", ".."):
        return f"member {name!r} has a path, not a sample file name"
    if not info.isreg():
        kind = KINDS.get(info.type, f"of tar type {info.type.decode('latin-1')!r}")
        return f"member {name!r} is {kind}, not a regular file"
    if "." not in name:
        return f"member {name!r} is not a sample file (KEY.extension)"
    if name in seen:
        return f"member {name!r} appears twice"
    return ""


def _extended(stream: TarStream, kind: bytes, size: int, into: dict[str, str]) -> bool:
    """Read a PAX or GNU long-name header's records into ``into`` (for the next member);
    whether it was whole and well-formed. Only ``path`` and ``size`` change what is read."""
    data = stream.read(size)
    if len(data) < size or stream.skip(-size % BLOCK) < -size % BLOCK:
        return False
    if kind == tarfile.GNUTYPE_LONGNAME:
        into["path"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    elif kind == tarfile.XHDTYPE:
        pos = 0
        while pos < len(data) and data[pos] != 0:
            length, _, _ = data[pos : pos + 20].partition(b" ")
            if not length.isdigit() or int(length) <= len(length) + 1:
                return False
            record = data[pos : pos + int(length)]
            key, eq, value = record[len(length) + 1 :].partition(b"=")
            if not eq or not record.endswith(b"\n"):
                return False
            into[key.decode("utf-8", "surrogateescape")] = value[:-1].decode("utf-8", "surrogateescape")
            pos += int(length)
    return True
