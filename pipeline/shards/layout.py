"""Where each part of a latent dataset lives under OUT (any fsspec URL)."""

from __future__ import annotations

import errno
import os
import re
import uuid
from dataclasses import dataclass

import fsspec

from pipeline.errors import DatasetError
from pipeline.shards.retry import with_retries

FORMAT_VERSION = 1
SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHARD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}-\d{6}")


def check_shard_name(name: str) -> str:
    """``name`` if it is a shard name (``<split>-<6 digits>``); a dataset from elsewhere whose
    manifest names ``../../x`` or ``/etc/x`` is refused here, before any path is built."""
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        raise DatasetError(f"{name!r} is not a shard name (<split>-<6 digits>, letters, digits, _ "
                           "and - only): the manifest or index may point outside its dataset; "
                           "refusing to read it")
    return name


@dataclass(frozen=True)
class Layout:
    root: str  # fsspec URL, no trailing slash

    @classmethod
    def at(cls, root: str) -> Layout:
        return cls(str(root).rstrip("/"))

    def url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def manifest(self) -> str:
        return self.url("manifest.json")

    @property
    def plan(self) -> str:
        return self.url("plan.json")

    @property
    def index(self) -> str:
        return self.url("index.parquet")

    @property
    def failures(self) -> str:
        return self.url("failures.parquet")

    @property
    def codec_checkpoint(self) -> str:
        return self.url("codec", "codec.pt")

    @property
    def codec_identity(self) -> str:
        return self.url("codec", "codec.json")

    @staticmethod
    def shard_name(split: str, n: int) -> str:
        if not SPLIT_NAME.fullmatch(split):
            raise DatasetError(f"split name {split!r} cannot name a shard: use letters, digits, _ and - "
                               "(at most 64)")
        return f"{split}-{n:06d}"

    def shard_tar(self, name: str) -> str:
        return self.url("shards", f"{check_shard_name(name)}.tar")

    def shard_index(self, name: str) -> str:
        return self.url("shards", f"{check_shard_name(name)}.parquet")


def atomic_write(url: str, data: bytes) -> None:
    """Write ``data`` so that ``url`` is either absent or complete, never half-written.

    Local files go to a temp name in the same folder and are renamed; object stores get a
    single PUT, which is atomic there. Transient failures are retried with backoff
    (``pipeline.shards.retry``); a full disk or a permission error fails at once.
    """
    try:
        with_retries(lambda: _write_once(url, data), f"writing {url}")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device writing {url}; free some space and "
                          "rerun the same command (that file was not written, nothing is half-written, "
                          "and what was written before it is kept)") from exc
        raise


def _write_once(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if "file" in fs.protocol:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)


def read_file(url: str) -> bytes:
    def once() -> bytes:
        with fsspec.open(url, "rb") as f:
            return f.read()

    return with_retries(once, f"reading {url}")


def exists(url: str) -> bool:
    def once() -> bool:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.exists(path)

    return with_retries(once, f"looking for {url}")
