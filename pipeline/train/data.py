"""The two kinds of input a classifier trains on: ŷ from latent shards, or JPEG pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.targets import ScaleAug


@dataclass(frozen=True)
class InputSpec:
    data: str  # latent dataset root, or (pixels) an image root with train/ and val/ class folders
    kind: str = "latent"  # "latent" | "pixels"
    window: tuple[int, int] | None = (14, 14)  # latent crop; pixels use 16x this
    batch_size: int = 32
    workers: int = 2
    seed: int = 0
    cache: str | None = None  # warm decoded-latent cache directory (latent inputs only)
    cache_max_bytes: int = 20 * 2**30
    augment: ScaleAug | None = None  # ŷ: scale / aspect augmentation of the training window

    def __post_init__(self):
        if self.kind == "pixels" and self.augment is not None:
            raise ConfigError("scale augmentation (--scale-aug) is for ŷ; pixels get RandomResizedCrop")


class Loader(NamedTuple):
    """One split's input: the dataset, the DataLoader over it, the class names, the codec
    section of the dataset's manifest (``None`` for pixels), and the generator the DataLoader
    draws from (its shuffle and worker seeds; `pipeline.train.engine.seed_epoch` reseeds it)."""

    dataset: Any
    loader: DataLoader
    classes: list[str]
    codec: dict | None
    generator: torch.Generator


def _latent_loader(spec: InputSpec, split: str, train: bool):
    ds = LatentShardDataset(LatentLoaderConfig(spec.data, split=split, train=train,
                                               window=spec.window, seed=spec.seed, cache=spec.cache,
                                               cache_max_bytes=spec.cache_max_bytes,
                                               augment=spec.augment if train else None))
    g = torch.Generator().manual_seed(spec.seed)
    loader = DataLoader(ds, batch_size=spec.batch_size, num_workers=spec.workers, generator=g,
                        persistent_workers=spec.workers > 0, pin_memory=torch.cuda.is_available())
    return Loader(ds, loader, ds.classes, ds.data.manifest.codec, g)


def _pixel_loader(spec: InputSpec, split: str, train: bool):
    from torchvision import datasets, transforms

    size = CELL * spec.window[0] if spec.window else 224
    tf = (transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()]) if train else
          transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]))
    ds = datasets.ImageFolder(f"{spec.data.rstrip('/')}/{split}", transform=tf)
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(ds, shuffle=train, seed=spec.seed, drop_last=True)
        ds.set_epoch = sampler.set_epoch  # the loop calls set_epoch on the dataset
    g = torch.Generator().manual_seed(spec.seed)
    loader = DataLoader(ds, batch_size=spec.batch_size, shuffle=train and sampler is None, sampler=sampler,
                        num_workers=spec.workers, persistent_workers=spec.workers > 0, generator=g)
    return Loader(ds, loader, ds.classes, None, g)


def make_loader(spec: InputSpec, split: str, train: bool) -> Loader:
    """``split`` of ``spec``'s input, shuffled and augmented when ``train``."""
    return (_latent_loader if spec.kind == "latent" else _pixel_loader)(spec, split, train)
