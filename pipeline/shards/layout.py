"""Where each part of a latent dataset lives under OUT (any fsspec URL)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import DatasetError
from pipeline.names import SHARD_NAME, SPLIT_NAME

FORMAT_VERSION = 1


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
