"""Small generator stages over webdataset's tar expansion: plan → samples → ŷ → augment."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import fsspec
import torch
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.errors import DatasetError


@dataclass(frozen=True)
class ShardSlice:
    """Samples [start, stop) (positions inside the shard) of one shard."""

    url: str
    name: str
    start: int
    stop: int
    size: int | None = None  # the tar's bytes as the manifest gives them: never read past this


class _Bounded:
    """A read-only stream that refuses to go past ``limit`` bytes (a tar bigger than its
    manifest says, e.g. a member claiming gigabytes, ends the shard instead of the memory)."""

    def __init__(self, f, limit: int, url: str):
        self.f, self.left, self.url, self.limit = f, limit, url, limit

    def read(self, n: int = -1) -> bytes:
        want = self.left + 1 if n is None or n < 0 else min(n, self.left + 1)
        data = self.f.read(want)
        self.left -= len(data)
        if self.left < 0:
            raise DatasetError(f"{self.url} is larger than the {self.limit} bytes its manifest gives; "
                               "it is not the shard that was converted")
        return data


def assign_slices(shards: list[tuple[str, str, int]], order: list[int], part: int,
                  parts: int, drop_remainder: bool = True) -> list[ShardSlice]:
    """Cut the concatenation of ``shards`` (in ``order``) into ``parts`` disjoint ranges.

    With ``drop_remainder`` every part gets exactly ``total // parts`` samples, so DDP ranks
    see equal numbers of batches (no hang on uneven shards); without, the parts differ by at
    most one sample and cover everything (used to split a rank's range among its workers).
    """
    total = sum(n for _, _, n in shards)
    if drop_remainder:
        per = total // parts
        lo, hi = part * per, (part + 1) * per
    else:
        lo, hi = total * part // parts, total * (part + 1) // parts
    out, pos = [], 0
    for i in order:
        url, name, n = shards[i]
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            out.append(ShardSlice(url, name, a - pos, b - pos))
        pos += n
    return out


def slice_samples(slices: Iterable[ShardSlice], handler) -> Iterator[dict]:
    """Samples of each slice, read as a stream through webdataset's tar stages."""
    for sl in slices:
        with fsspec.open(sl.url, "rb") as f:
            stream = f if sl.size is None else _Bounded(f, sl.size, sl.url)
            # members with a path (``../x``, ``/etc/x``, ``a/b``) are no sample of ours: skipped
            files = tar_file_expander([{"stream": stream, "url": sl.url}], handler=handler,
                                      select_files=lambda name: "/" not in name)
            for i, sample in enumerate(group_by_keys(files, handler=handler)):
                if i >= sl.stop:
                    break
                if i >= sl.start:
                    sample["__shard__"], sample["__pos__"] = sl.name, i
                    yield sample


def shuffle(samples: Iterable, buffer: int, rng: random.Random) -> Iterator:
    """Reservoir-style shuffle buffer (seeded)."""
    buf = []
    for s in samples:
        buf.append(s)
        if len(buf) >= buffer:
            yield buf.pop(rng.randrange(len(buf)))
    rng.shuffle(buf)
    yield from buf


def crop_and_flip(y: torch.Tensor, window: tuple[int, int] | None, rng: random.Random | None) -> torch.Tensor:
    """Random (``rng``) or centre (``rng=None``) crop of a fixed latent window, random h-flip.

    A grid smaller than the window is zero-padded on the right/bottom first. (With targets
    that move with the crop, see `pipeline.loader.targets`.)
    """
    from pipeline.loader.targets import choose_crop, crop_latent

    return crop_latent(y, choose_crop((y.shape[1], y.shape[2]), window, rng))
