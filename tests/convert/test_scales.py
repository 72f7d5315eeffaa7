"""`convert --scales`: each image also encoded at fractions of its size, as extra tar members
the index points at, `verify` checks and the loader draws one of per epoch (the exact
alternative to resampling ŷ); the pixel baselines draw the same scale for the same sample."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from pipeline.convert import ConvertJob, ConvertOptions, LocalExecutor, convert_dataset
from pipeline.errors import ConfigError
from pipeline.images import ImagePolicy, prepare_image
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.targets import encoded_boxes, member_scale
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify
from pipeline.train.pixel_detect import PixelDetectionDataset
from tests.train.scenes import scenes_dataset
from tests.trees import write_photo_tree

SCALES = (0.75, 0.5)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("scales")
    src = write_photo_tree(root / "src", 3)
    out = root / "out"
    convert_dataset(ConvertJob(str(src), str(out), options=ConvertOptions(
        ImagePolicy(size=128, scales=SCALES), shard_size=8)), LocalExecutor())
    return src, out


def test_members_are_the_codec_s_own_encodings_of_the_rescaled_images(scaled, default_codec):
    src, out = scaled
    ds = LatentDataset.open(str(out))
    assert ds.manifest.preprocessing["scales"] == list(SCALES)
    names = [m.name for m in tarfile.open(ds.layout.shard_tar("train-000000"))]
    for row in ds.index.to_pylist():
        key, members = row["key"], json.loads(row["members"])
        assert [m["member"] for m in members] == ["s075.latent", "s050.latent"]
        i = names.index(f"{key}.latent")  # the image, its members, then its JSON: a fixed order
        assert names[i : i + 4] == [f"{key}.{m}" for m in ("latent", "s075.latent", "s050.latent", "json")]
        data = open(row["source_uri"], "rb").read()
        tar = open(ds.layout.shard_tar("train-000000"), "rb").read()
        for m in members:
            blob = tar[m["offset"] : m["offset"] + m["size"]]
            at = ImagePolicy(size=128).at_scale(m["scale"], (row["orig_h"], row["orig_w"]))
            img = prepare_image(data, at)
            assert list(img.enc_hw) == m["enc_hw"] and min(img.enc_hw) == round(128 * m["scale"])
            x = torch.from_numpy(img.pixels.copy()).permute(2, 0, 1)[None].float() / 255
            assert default_codec.encode(x, [img.enc_hw])[0].data == blob  # exactly its own encoding
            assert tuple(default_codec.decode_y(blob).shape[1:]) == tuple(m["valid_hw"])
    rep = verify(str(out))
    assert not rep.faults and rep.decoded == 3 * ds.manifest.totals.samples
    keys = {s["__key__"]: s for s in wds.WebDataset(ds.layout.shard_tar("train-000000"), shardshuffle=False)}
    assert all({"latent", "s075.latent", "s050.latent", "json"} <= set(s) for s in keys.values())


def test_verify_names_a_member_the_index_misplaces(scaled, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    _, out = scaled
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    index = bad / "shards" / "train-000000.parquet"
    t = pq.read_table(index)
    rows = t.to_pylist()
    m = json.loads(rows[0]["members"])
    m[0]["offset"] += 512
    rows[0]["members"] = json.dumps(m)
    pq.write_table(t.from_pylist(rows, schema=t.schema), index)
    assert any(f"{rows[0]['key']}.s075.latent" in f.problem for f in verify(str(bad), sample=0).faults)


def test_without_scales_the_preprocessing_reads_as_before():
    assert "scales" not in ImagePolicy().to_json()
    for bad in ((1.0,), (0.5, 0.5), (0.0,), (0.751, 0.749)):
        with pytest.raises(ConfigError, match="--scales"):
            ImagePolicy(scales=bad)


def test_the_loader_draws_one_encoding_per_sample_and_epoch(scaled):
    _, out = scaled
    members = (1.0, *SCALES)
    ds = LatentShardDataset(LatentLoaderConfig(str(out), window=None, members=members))
    rows = {r["key"]: r for r in ds.data.index.to_pylist()}
    grids = {k: {1.0: (r["valid_h"], r["valid_w"]),
                 **{m["scale"]: tuple(m["valid_hw"]) for m in json.loads(r["members"])}}
             for k, r in rows.items()}
    keys = sorted(rows)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        shapes = sorted(tuple(y.shape[1:]) for y, _ in ds)
        want = sorted(grids[k][member_scale(0, epoch, k, members)] for k in keys)
        assert shapes == want
        seen |= {member_scale(0, epoch, k, members) for k in keys}
    assert seen == set(members)  # every encoding drawn at some epoch
    plain = LatentShardDataset(LatentLoaderConfig(str(out), window=None))
    assert sorted(tuple(y.shape[1:]) for y, _ in plain) == sorted(grids[k][1.0] for k in keys)
    with pytest.raises(ConfigError, match="--scales 0.6"):
        LatentShardDataset(LatentLoaderConfig(str(out), members=(1.0, 0.6)))
    with pytest.raises(ConfigError, match="warm cache"):
        LatentLoaderConfig(str(out), members=members, cache=str(out / "cache"))


def test_detection_targets_follow_the_drawn_member_in_both_arms(tmp_path):
    ds_root = scenes_dataset(tmp_path, train=4, val=1)
    out = tmp_path / "scaled"
    convert_dataset(ConvertJob(str(tmp_path / "voc"), str(out), options=ConvertOptions(
        ImagePolicy(size=0, scales=SCALES), shard_size=4)), LocalExecutor())
    assert LatentDataset.open(str(ds_root)).manifest.totals.samples == 5
    members = (1.0, *SCALES)
    y_loader = LatentShardDataset(LatentLoaderConfig(str(out), window=None, target="detection",
                                                     members=members))
    pixels = PixelDetectionDataset(str(tmp_path / "voc"), "train", None, "detection",
                                   policy=ImagePolicy(size=0), members=members)
    rows = {r["key"]: r for r in y_loader.data.index.to_pylist()}
    for epoch in range(3):
        y_loader.set_epoch(epoch)
        pixels.set_epoch(epoch)
        got = [((y.shape[1], y.shape[2]), t["boxes"].numpy()) for y, t in y_loader]  # (the loader
        # yields no keys: each pixel sample's boxes must be among those of ŷ of its grid)
        for i, item in enumerate(pixels.items):
            x, t_px = pixels[i]
            scale = member_scale(0, epoch, item.key, members)
            row = rows[item.key]
            enc = (row["enc_h"], row["enc_w"]) if scale == 1.0 else next(
                tuple(m["enc_hw"]) for m in json.loads(row["members"]) if m["scale"] == scale)
            assert tuple(x.shape[1:]) == tuple(-(-v // 64) * 64 for v in enc)  # padded to 64
            targets = json.loads(row["targets"])
            want = encoded_boxes(np.array([b["xyxy"] for b in targets["boxes"]]).reshape(-1, 4),
                                 (row["orig_h"], row["orig_w"]), enc)
            assert np.allclose(t_px["boxes"].numpy(), want, atol=1e-3)  # no window, no flip
            grid = (-(-enc[0] // 16), -(-enc[1] // 16))
            mirrored = want.copy()
            mirrored[:, [0, 2]] = 16 * grid[1] - want[:, [2, 0]]
            assert any(g == grid and b.shape == want.shape and (np.allclose(b, want, atol=1e-3) or
                                                                np.allclose(b, mirrored, atol=1e-3))
                       for g, b in got)
