"""The wallpaper photo sets: held-out photographs never among the training ones, every file
with its package and licence, Kodak-sized held-out images. Built from package trees made
here (the real packages come from `make photos`, which needs a Debian mirror)."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import SourceError
from pipeline.tasks import wallpapers as wp


def test_the_list_holds_out_twelve_photographs_no_training_step_sees():
    names = [p.name for p in wp.PHOTOS]
    assert len(names) == len(set(names))
    held, train = wp.photos(wp.HELDOUT), wp.photos(wp.TRAIN)
    assert len(held) >= 12 and train
    assert not {p.member for p in held} & {p.member for p in train}
    assert {p.package for p in wp.PHOTOS} <= set(wp.PACKAGES) - set(wp.ILLUSTRATIONS_ONLY)


def _fake_packages(dest):
    """Every listed member as a small photo-like JPEG, with the licence files the real packages have."""
    rng = np.random.default_rng(0)
    for p in wp.PHOTOS:
        f = dest / "pkgs" / p.package / p.member
        f.parent.mkdir(parents=True, exist_ok=True)
        h, w = (400, 640) if len(p.name) % 3 else (640, 400)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(f, quality=90)
        if p.package == "plasma-workspace-wallpapers":
            meta = {"KPlugin": {"License": "LGPLv3", "Authors": [{"Name": f"Author of {p.name}"}]}}
            (f.parents[2] / "metadata.json").write_text(json.dumps(meta))
    for pkg in ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"):
        doc = dest / "pkgs" / pkg / "usr/share/doc" / pkg
        doc.mkdir(parents=True)
        stanzas = [f"Files: 16.04/{p.member.rsplit('/', 1)[1]}\nCopyright: 2018, Someone\nLicense: CC-BY-4.0"
                   for p in wp.PHOTOS if p.package.startswith("lomiri")]
        (doc / "copyright").write_text("Format: dep5\n\n" + "\n\n".join(stanzas) + "\n")


def test_build_writes_the_sets_and_a_manifest_of_every_file(tmp_path):
    _fake_packages(tmp_path)
    versions = {pkg: "1.0" for pkg in {p.package for p in wp.PHOTOS}}
    m = wp.build_photo_sets(tmp_path, versions)
    rows = {r["name"]: r for r in m["photos"]}
    assert set(rows) == {p.name for p in wp.PHOTOS}
    for p in wp.photos(wp.TRAIN):
        r = rows[p.name]
        assert (tmp_path / r["file"]).read_bytes() == (tmp_path / "pkgs" / p.package / p.member).read_bytes()
        assert r["package"] == p.package and r["version"] == "1.0" and r["licence"] != "?"
    for p in wp.photos(wp.HELDOUT):
        with Image.open(tmp_path / rows[p.name]["file"]) as im:
            assert sorted(im.size) == [512, 768]
    train = wp.training_files(tmp_path)
    assert {r["name"] for r in train} == {p.name for p in wp.photos(wp.TRAIN)}
    assert not {r["file"] for r in train} & {r["file"] for r in m["photos"] if r["role"] == wp.HELDOUT}
    assert json.loads((tmp_path / "photos.json").read_text()) == m


def test_a_manifest_naming_a_photo_in_both_roles_is_refused(tmp_path):
    _fake_packages(tmp_path)
    m = wp.build_photo_sets(tmp_path, {})
    held = next(r for r in m["photos"] if r["role"] == wp.HELDOUT)
    m["photos"].append({**held, "role": wp.TRAIN})
    (tmp_path / "photos.json").write_text(json.dumps(m))
    with pytest.raises(SourceError, match="both as training and held-out"):
        wp.training_files(tmp_path)
    with pytest.raises(SourceError, match="make photos"):
        wp.training_files(tmp_path / "nowhere")
