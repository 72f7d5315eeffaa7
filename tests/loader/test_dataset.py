"""The ŷ loader with a plain DataLoader: coverage, rank splits, shuffles, faults, refusal."""

import logging

import pytest
import torch
from torch.utils.data import DataLoader

import pipeline.loader.dataset as ld
from pipeline.codec.load import codec_from_checkpoint
from pipeline.errors import FingerprintMismatch, LatentShardsError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from tests.conftest import tiny_checkpoint


def _fingerprints(loader):
    """(checksum of ŷ, target) for each sample, in the order the loader yields them."""
    return [(round(float(y.double().sum()), 3), int(t))
            for ys, ts in loader for y, t in zip(ys, ts, strict=True)]


def test_every_sample_once_with_worker_processes(latent_root):
    ds = LatentShardDataset(LatentLoaderConfig(str(latent_root), train=False))
    loader = DataLoader(ds, batch_size=3, num_workers=2, pin_memory=False, persistent_workers=True)
    got = _fingerprints(loader)
    assert len(got) == len(ds) == 10 and len(set(got)) == 10
    assert sorted(t for _, t in got) == sorted(r["label"] for r in ds.data.index.to_pylist())
    ys, _ = next(iter(loader))
    assert ys.shape[1:] == (96, 14, 14) and ys.dtype == torch.float32


def test_centre_crop_matches_random_access(latent_root):
    ds = LatentShardDataset(LatentLoaderConfig(str(latent_root), train=False, window=None, shuffle_buffer=1))
    key = ds.data.index.column("key")[0].as_py()
    y, label = ds[key]
    first = next(iter(ds))
    assert torch.equal(first[0], y) and first[1] == label


def test_ranks_see_disjoint_equal_slices(latent_root, monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(ld, "_rank_world", lambda r=rank: (r, 3))
        ds = LatentShardDataset(LatentLoaderConfig(str(latent_root), train=True, seed=1))
        assert len(ds) == 3
        seen.append(_fingerprints(DataLoader(ds, batch_size=2, num_workers=2)))
    assert [len(s) for s in seen] == [3, 3, 3]  # 10 samples: one dropped so ranks stay equal
    flat = [x for s in seen for x in s]
    assert len(set(flat)) == 9


def test_shuffle_is_seeded_per_epoch(latent_root):
    cfg = LatentLoaderConfig(str(latent_root), train=True, seed=3, window=(8, 8))
    a, b = LatentShardDataset(cfg), LatentShardDataset(cfg)
    first = _fingerprints(DataLoader(a, batch_size=4))
    assert first == _fingerprints(DataLoader(b, batch_size=4))
    a.set_epoch(1)
    again = _fingerprints(DataLoader(a, batch_size=4))
    assert sorted(t for _, t in again) == sorted(t for _, t in first) and again != first


def test_other_codec_is_refused_naming_both(latent_root):
    other = codec_from_checkpoint(tiny_checkpoint("mbt2018-mean"))
    with pytest.raises(FingerprintMismatch) as info:
        LatentShardDataset(LatentLoaderConfig(str(latent_root)), codec=other)
    assert other.identity.fingerprint[:16] in str(info.value)


def test_corrupt_sample_is_skipped_with_its_name_or_raised_when_strict(latent_root, tmp_path, caplog):
    import shutil

    import pandas as pd

    root = tmp_path / "copy"
    shutil.copytree(latent_root, root)
    row = pd.read_parquet(root / "index.parquet").iloc[0]
    tar = root / "shards" / f"{row['shard']}.tar"
    data = bytearray(tar.read_bytes())
    data[row["latent_offset"] + 30] ^= 0xFF
    tar.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        got = list(LatentShardDataset(LatentLoaderConfig(str(root), train=False)))
    # 9 real samples, and one placeholder (zeros, target -1) so the rank's count stays equal
    assert len(got) == 10 and [t for _, t in got].count(-1) == 1
    assert all(float(y.abs().sum()) == 0 for y, t in got if t == -1)
    assert row["key"] in caplog.text and row["shard"] in caplog.text
    with pytest.raises(LatentShardsError, match=row["key"]):
        list(LatentShardDataset(LatentLoaderConfig(str(root), train=False, strict=True)))


def test_unknown_split_is_a_clear_error(latent_root):
    with pytest.raises(LatentShardsError, match="no samples in split 'val'"):
        LatentShardDataset(LatentLoaderConfig(str(latent_root), split="val"))


def test_num_batches_counts_each_workers_partial_batch(latent_root):
    ds = LatentShardDataset(LatentLoaderConfig(str(latent_root), train=False))
    for workers in (0, 1, 2, 3):
        loader = DataLoader(ds, batch_size=3, num_workers=workers)
        assert sum(1 for _ in loader) == ds.num_batches(3, workers)


def test_persistent_workers_reshuffle_like_set_epoch(latent_root):
    cfg = LatentLoaderConfig(str(latent_root), train=True, seed=5, window=(8, 8))
    persistent = DataLoader(LatentShardDataset(cfg), batch_size=4, num_workers=2, persistent_workers=True)
    fresh_ds = LatentShardDataset(cfg)
    for epoch in range(2):
        fresh_ds.set_epoch(epoch)
        assert _fingerprints(persistent) == _fingerprints(DataLoader(fresh_ds, batch_size=4, num_workers=2))
