"""Small generator stages over checked tar members grouped by webdataset: plan → samples → ŷ → augment."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from webdataset.tariterators import group_by_keys

from pipeline.shards.tar import END, ShardFault, open_tar, tar_members


@dataclass(frozen=True)
class ShardSlice:
    """Samples [start, stop) (positions inside the shard) of one shard."""

    url: str
    name: str
    start: int
    stop: int
    size: int | None = None  # the tar's bytes as the manifest gives them: never read past this


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


def slice_samples(slices: Iterable[ShardSlice], on_fault: Callable[[ShardFault], None]) -> Iterator[dict]:
    """Samples of each slice, read as a stream: `pipeline.shards.tar.tar_members` checks every
    member and never reads past the manifest's ``tar_bytes``; webdataset groups them by key.

    ``on_fault`` is the error policy (raise, or log and go on); what a fault spoils is
    skipped either way, and a shard that cannot be read at all is one fault.
    """
    for sl in slices:
        try:
            with open_tar(sl.url, sl.size) as stream:
                files = ({"fname": m.name, "data": data, "__url__": sl.url}
                         for m, data in tar_members(stream, sl.url, on_fault))
                for i, sample in enumerate(group_by_keys(files)):
                    if i >= sl.stop:
                        break
                    if i >= sl.start:
                        sample["__shard__"], sample["__pos__"] = sl.name, i
                        yield sample
        except OSError as exc:
            on_fault(ShardFault(sl.url, f"unreadable: {exc}", END))


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
