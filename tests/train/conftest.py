"""A small latent dataset of real photos (10 samples, 3 classes) for the training tests."""

import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from tests.loader.conftest import photo_folder


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    src = photo_folder(tmp_path_factory.mktemp("photos"))
    out = tmp_path_factory.mktemp("latents") / "ds"
    convert_dataset(ConvertJob(str(src), str(out), options=ConvertOptions(shard_size=3)))
    return out
