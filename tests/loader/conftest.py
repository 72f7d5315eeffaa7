"""A small latent dataset of real photos (10 samples, 3 classes, shards of 3), shared by the loader tests."""

from pathlib import Path

import pytest
from PIL import Image

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.tasks.photos import bundled_photos


def photo_folder(src: Path, n: int = 10) -> Path:
    for i, p in enumerate(bundled_photos(colour_only=True)[:n]):
        d = src / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.open(p.path).convert("RGB").save(d / f"{p.name}.jpg", quality=90)
    return src


@pytest.fixture(scope="session")
def photos_src(tmp_path_factory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def latent_root(tmp_path_factory, photos_src) -> Path:
    out = tmp_path_factory.mktemp("latents") / "ds"
    convert_dataset(ConvertJob(str(photos_src), str(out), options=ConvertOptions(shard_size=3)))
    return out
