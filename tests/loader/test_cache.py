"""The warm decoded-latent cache: exact ŷ, no tar reads once warm, invalidation, eviction."""

import logging
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.codec import checkpoint
from pipeline.codec.load import CodecSpec
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import LatentShardsError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.cache import FLOAT32, INT8, INT16, CachedSample, LatentCache, pack_latent, unpack_latent
from tests.conftest import tiny_checkpoint


def _bits(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


@pytest.mark.parametrize("kind,make", [
    (INT8, lambda g: torch.randint(-128, 128, (24, 5, 7), generator=g).float()),
    (INT16, lambda g: torch.randint(-3000, 3000, (24, 5, 7), generator=g).float()),
    (FLOAT32, lambda g: torch.randn(24, 5, 7, generator=g) * 4),
    (FLOAT32, lambda g: torch.tensor([[[0.0, -0.0, 1.0]]])),  # a negative zero keeps its sign
])
def test_pack_unpack_is_bit_exact(kind, make):
    y = make(torch.Generator().manual_seed(0))
    k, data = pack_latent(y)
    assert k == kind
    back = unpack_latent(k, tuple(y.shape), data)
    assert back.dtype == torch.float32 and _bits(back) == _bits(y)


def test_integer_latents_are_stored_small():
    y = torch.randint(-3, 4, (96, 16, 24), generator=torch.Generator().manual_seed(0)).float()
    k, data = pack_latent(y)
    assert k == INT8 and len(data) < y.numel() // 2  # < 0.5 byte per element, 4 raw


def _samples(shard_seed, n=4):
    g = torch.Generator().manual_seed(shard_seed)
    return [CachedSample(i, f"k{i}", i % 3, torch.randn(8, 4, 4, generator=g)) for i in range(n)]


def test_fingerprint_change_empties_the_cache(tmp_path, caplog):
    a = LatentCache(tmp_path, "file:///data/ds", "aa" * 32)
    a.put("shard0", _samples(0))
    assert a.positions("shard0", 0, 10) == {0, 1, 2, 3}
    assert [_bits(s.y_hat) for s in a.read("shard0", 0, 4)] == [_bits(s.y_hat) for s in _samples(0)]
    a.close()
    with caplog.at_level(logging.WARNING):
        b = LatentCache(tmp_path, "file:///data/ds", "bb" * 32)
        assert b.positions("shard0", 0, 10) == set() and b.stats()["bytes"] == 0
    assert "invalidated" in caplog.text
    # the same fingerprint again keeps what is there
    b.put("shard0", _samples(0))
    b.close()
    assert LatentCache(tmp_path, "file:///data/ds", "bb" * 32).stats()["samples"] == 4


def test_size_limit_admission_and_eviction(tmp_path):
    one = sum(len(pack_latent(s.y_hat)[1]) for s in _samples(0))
    c = LatentCache(tmp_path, "ds", "ff" * 32, max_bytes=int(2.5 * one))
    assert c.put("s0", _samples(0)) == 4 and c.put("s1", _samples(1)) == 4
    assert c.put("s2", _samples(2)) < 4  # full: the rest of s2 is not admitted...
    assert c.stats()["bytes"] <= c.max_bytes and len(c.positions("s1", 0, 4)) == 4
    assert len(c.positions("s0", 0, 4)) == 4  # s0 used last: s2, then s1, were used before it
    c.close()
    # ...and a lower limit evicts least-recently-used shards first (s2, then s1)
    small = LatentCache(tmp_path, "ds", "ff" * 32, max_bytes=int(1.2 * one))
    small.prepare()
    assert small.stats()["bytes"] <= small.max_bytes
    assert len(small.positions("s0", 0, 4)) == 4 and not small.positions("s1", 0, 4)
    # shards the dataset no longer has are evicted when it is opened
    small.prepare(shards=["s9"])
    assert small.stats()["samples"] == 0
    with pytest.raises(LatentShardsError, match="positive"):
        LatentCache(tmp_path, "ds", "ff" * 32, max_bytes=0)


def test_a_damaged_row_is_dropped_and_decoded_again(latent_root, tmp_path):
    import sqlite3

    cfg = LatentLoaderConfig(str(latent_root), train=False, window=None, cache=str(tmp_path / "cache"))
    ds = LatentShardDataset(cfg)
    first = _epoch(ds, 0)
    with sqlite3.connect(ds.cache.path) as db:
        db.execute("UPDATE latents SET data = x'00112233' WHERE pos = 1")
        damaged = db.execute("SELECT COUNT(*) FROM latents WHERE pos = 1").fetchone()[0]
    assert damaged >= 1
    assert _epoch(LatentShardDataset(cfg), 0) == first  # decoded from the tar again, same bits
    assert ds.cache.stats()["samples"] == 10  # and cached again


def _as_list(batch):
    return batch


def _epoch(ds, epoch, workers=0):
    """(ŷ bits, target) in the order one epoch yields them (whole grids differ in size: no stacking)."""
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=_as_list)
    return [(_bits(y), int(t)) for batch in loader for y, t in batch]


def test_cached_loader_yields_exactly_the_uncached_samples(latent_root, tmp_path):
    cfg = dict(root=str(latent_root), train=True, seed=5, window=(8, 8))
    plain = LatentShardDataset(LatentLoaderConfig(**cfg))
    cached = LatentShardDataset(LatentLoaderConfig(**cfg, cache=str(tmp_path / "cache")))
    cold = _epoch(cached, 0, workers=2)
    assert cold == _epoch(plain, 0, workers=2)
    assert cached.cache.stats()["samples"] == 10
    warm = [_epoch(cached, e, workers=2) for e in (1, 2)]
    assert warm == [_epoch(plain, e, workers=2) for e in (1, 2)]
    assert warm[0] != warm[1]  # still shuffled and augmented per epoch


def test_warm_epochs_do_not_read_the_shards(latent_root, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(latent_root, copy)
    cfg = LatentLoaderConfig(str(copy), train=False, window=None, cache=str(tmp_path / "cache"))
    first = _epoch(LatentShardDataset(cfg), 0)
    for tar in (copy / "shards").glob("*.tar"):
        tar.write_bytes(b"")  # every tar now unreadable: only the cache can answer
    assert _epoch(LatentShardDataset(cfg), 0) == first


def test_a_new_codec_fingerprint_misses_the_old_cache(latent_root, photos_src, tmp_path):
    """The same dataset path converted again with another codec: nothing stale comes back."""
    ds_path = tmp_path / "ds"
    shutil.copytree(latent_root, ds_path)
    cfg = LatentLoaderConfig(str(ds_path), train=False, window=None, cache=str(tmp_path / "cache"))
    before = _epoch(LatentShardDataset(cfg), 0)
    ckpt = tmp_path / "tiny.pt"
    checkpoint.save(tiny_checkpoint("mbt2018-mean", seed=3, N=16, M=96), str(ckpt))
    shutil.rmtree(ds_path)
    convert_dataset(ConvertJob(str(photos_src), str(ds_path), codec=CodecSpec(checkpoint=str(ckpt)),
                               options=ConvertOptions(shard_size=3)))
    fresh = LatentShardDataset(cfg)
    after = _epoch(fresh, 0)
    assert len(after) == len(before) and after != before
    assert fresh.cache.stats()["fingerprint"] == fresh.data.fingerprint
    assert after == _epoch(LatentShardDataset(LatentLoaderConfig(str(ds_path), train=False, window=None)), 0)


def test_cache_directory_that_cannot_be_made_is_a_clear_error(latent_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LatentShardsError, match="latent cache"):
        LatentShardDataset(LatentLoaderConfig(str(latent_root), cache=str(blocker)))


def _open_and_put(args):
    root, i, start = args
    import time

    time.sleep(max(0.0, start - time.time()))  # every process opens at the same instant
    c = LatentCache(root, "ds", "cc" * 32)
    c.put(f"s{i}", _samples(i, n=2))
    return len(c.positions(f"s{i}", 0, 2))


def test_many_processes_opening_a_new_cache_at_once(tmp_path):
    """Workers racing to create the same file (no prepare() first) all get in, none is refused."""
    import multiprocessing as mp
    import time

    with mp.get_context("fork").Pool(8) as pool:
        for r in range(8):
            root = str(tmp_path / f"r{r}")
            got = pool.map(_open_and_put, [(root, i, time.time() + 0.3) for i in range(8)], chunksize=1)
            assert got == [2] * 8
            assert LatentCache(root, "ds", "cc" * 32).stats()["samples"] == 16


def test_warm_ahead_with_a_process_pool_then_train_reads_only_the_cache(latent_root, tmp_path):
    from pipeline.loader.warm import warm_cache

    copy = tmp_path / "ds"
    shutil.copytree(latent_root, copy)
    plain = _epoch(LatentShardDataset(LatentLoaderConfig(str(copy), train=True, seed=2, window=(8, 8))), 0, 2)
    done = []
    res = warm_cache(str(copy), str(tmp_path / "cache"), workers=2, on_shard=lambda name, n: done.append(n))
    assert res.samples == res.expected == 10 and sum(done) == 10 and res.shards == 4
    for tar in (copy / "shards").glob("*.tar"):
        tar.write_bytes(b"")  # only the cache can answer now
    cfg = LatentLoaderConfig(str(copy), train=True, seed=2, window=(8, 8), cache=str(tmp_path / "cache"))
    assert _epoch(LatentShardDataset(cfg), 0, workers=2) == plain
    with pytest.raises(LatentShardsError, match="no split 'test'"):
        warm_cache(str(copy), str(tmp_path / "cache"), splits=["test"])


def test_train_and_val_loaders_share_the_cache_without_evicting_each_other(tmp_path):
    from tests.loader.conftest import photo_folder

    src = tmp_path / "src"
    photo_folder(src / "train", n=6)
    photo_folder(src / "val", n=3)
    convert_dataset(ConvertJob(str(src), str(tmp_path / "ds"),
                           options=ConvertOptions(shard_size=4)))

    def split(name):
        return LatentShardDataset(LatentLoaderConfig(str(tmp_path / "ds"), split=name, window=None,
                                                     cache=str(tmp_path / "cache")))

    _epoch(split("train"), 0)
    _epoch(split("val"), 0)
    # a second run opens both again: nothing is evicted, everything is cached
    assert split("train").cache.stats()["samples"] == 9
