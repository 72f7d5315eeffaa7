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

POLICIES = ("usual", "window", "scale", "members")


@dataclass(frozen=True)
class Augment:
    """The geometric augmentation of training windows, one policy for every arm:

    - ``usual``: what each input is usually given: ŷ a fixed-size window and a flip, pixels
      ``RandomResizedCrop`` (scale 0.08–1) and a flip;
    - ``window``: the same geometry for both: a fixed window (16 px per cell for pixels) and
      a flip;
    - ``scale``: the same geometry for both: a region of ``scale`` × the area and an aspect in
      ``ratio`` resampled to the window (ŷ by `ScaleAug`, pixels by ``RandomResizedCrop``)
      and a flip;
    - ``members``: the image at one of ``members`` scales each epoch, then a fixed window and
      a flip: ŷ the codec's own encoding of the rescaled image (`convert --scales`, the exact
      alternative to resampling ŷ), pixels the image resized by that factor.
    """

    policy: str = "usual"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resample: str = "nearest"  # ŷ under ``scale``: nearest, bilinear or area
    members: tuple[float, ...] = (1.0, 0.75, 0.5)  # under ``members``: the scales drawn among

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ConfigError(f"--augment is one of {', '.join(POLICIES)}, not {self.policy!r}")
        ScaleAug(self.scale, self.ratio, self.resample)  # checks the bounds
        if not self.members or any(not 0 < m <= 1 for m in self.members) or \
                len({round(100 * m) for m in self.members}) != len(self.members):
            raise ConfigError(f"--members are distinct scales in (0, 1] (to two decimals), got "
                              f"{list(self.members)}")

    def latent(self) -> ScaleAug | None:
        return ScaleAug(self.scale, self.ratio, self.resample) if self.policy == "scale" else None

    def latent_members(self) -> tuple[float, ...] | None:
        """The encodings the ŷ loader draws among (None: the image itself only)."""
        return tuple(self.members) if self.policy == "members" else None

    def stored_scales(self) -> tuple[float, ...]:
        """The `convert --scales` a conversion for this policy needs."""
        return tuple(m for m in self.members if m != 1.0) if self.policy == "members" else ()

    def pixel_transforms(self, size: int) -> list:
        from torchvision import transforms

        if self.policy == "members":
            return [RandomRescale(self.members), transforms.RandomCrop(size, pad_if_needed=True),
                    transforms.RandomHorizontalFlip()]
        if self.policy == "window":
            crop = transforms.RandomCrop(size, pad_if_needed=True)
        elif self.policy == "scale":
            crop = transforms.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio)
        else:
            crop = transforms.RandomResizedCrop(size)
        return [crop, transforms.RandomHorizontalFlip()]


class RandomRescale:
    """A PIL image resized by one of ``scales`` (uniformly drawn from torch's stream, as
    torchvision's transforms draw), bicubic as the converter resizes."""

    def __init__(self, scales: tuple[float, ...]):
        self.scales = tuple(scales)

    def __call__(self, img):
        from PIL import Image

        s = self.scales[int(torch.randint(len(self.scales), ()))]
        if s == 1.0:
            return img
        w, h = img.size
        return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)


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
    augment: Augment = Augment()  # the training windows' geometry (see Augment)


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
                                               augment=spec.augment.latent() if train else None,
                                               members=spec.augment.latent_members() if train else None))
    g = torch.Generator().manual_seed(spec.seed)
    loader = DataLoader(ds, batch_size=spec.batch_size, num_workers=spec.workers, generator=g,
                        persistent_workers=spec.workers > 0, pin_memory=torch.cuda.is_available())
    return Loader(ds, loader, ds.classes, ds.data.manifest.codec, g)


def _pixel_loader(spec: InputSpec, split: str, train: bool):
    from torchvision import datasets, transforms

    size = CELL * spec.window[0] if spec.window else 224
    tf = (transforms.Compose([*spec.augment.pixel_transforms(size), transforms.ToTensor()]) if train else
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
