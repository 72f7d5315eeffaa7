"""The CPU-sized tasks `latents make-task` builds from the bundled photos."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.tasks.classification import make_photo_task, task_recipe
from pipeline.tasks.photos import bundled_photos


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


def test_grey_textures_is_grey_turned_and_rebuilt_byte_for_byte(tmp_path):
    task = task_recipe("grey-textures", train_per_class=3, val_per_class=2, size=64)
    meta = make_photo_task(tmp_path / "a", task)
    assert meta["classes"] == [p.name for p in bundled_photos()] and len(meta["classes"]) == 18
    assert meta["novel"] == meta["classes"][-4:] and meta["task"]["grey"] is True
    assert json.loads((tmp_path / "a" / "fewshot.json").read_text()) == meta
    files = _digest(tmp_path / "a")
    assert len(files) == 18 * 5
    for name in files:
        a = np.asarray(Image.open(tmp_path / "a" / name)).astype(int)
        assert a.shape == (64, 64, 3)
        assert np.abs(a[..., 0] - a[..., 1]).max() <= 3 and np.abs(a[..., 1] - a[..., 2]).max() <= 3
    make_photo_task(tmp_path / "b", task)
    assert _digest(tmp_path / "b") == files
    # the colour recipe keeps colour and only the colour photos
    meta = make_photo_task(tmp_path / "c", task_recipe("photo-crops", train_per_class=1, val_per_class=1,
                                                       size=64))
    assert len(meta["classes"]) == 12
    a = np.asarray(Image.open(next((tmp_path / "c" / "train" / "astronaut").iterdir()))).astype(int)
    assert np.abs(a[..., 0] - a[..., 2]).max() > 30


def test_turns_and_jitter_change_the_crops_and_unknown_recipes_are_refused(tmp_path):
    plain = task_recipe("grey-textures", train_per_class=4, val_per_class=1, size=64, turns=False, jitter=0.0)
    make_photo_task(tmp_path / "plain", plain)
    full = task_recipe("grey-textures", train_per_class=4, val_per_class=1, size=64)
    make_photo_task(tmp_path / "full", full)
    p, f = _digest(tmp_path / "plain"), _digest(tmp_path / "full")
    assert p.keys() == f.keys() and sum(p[k] != f[k] for k in p) == len(p)
    with pytest.raises(ConfigError, match="unknown task 'textures'.*grey-textures"):
        task_recipe("textures")
    with pytest.raises(ConfigError, match="photos is 'colour' or 'all'"):
        task_recipe("photo-crops", photos="grey")


def test_tiles_makes_a_class_of_each_quarter_of_every_photo(tmp_path):
    task = task_recipe("tiles", train_per_class=2, val_per_class=1, size=32)
    meta = make_photo_task(tmp_path / "t", task)
    names = [p.name for p in bundled_photos()]
    assert meta["classes"] == [f"{n}-{r}{c}" for n in names for r in range(2) for c in range(2)]
    assert len(meta["novel"]) == 8 and not set(meta["novel"]) & set(meta["base"])
    assert len(_digest(tmp_path / "t")) == 72 * 3
    make_photo_task(tmp_path / "again", task)
    assert _digest(tmp_path / "t") == _digest(tmp_path / "again")  # rebuilt byte for byte
