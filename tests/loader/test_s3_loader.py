"""The loader streams a latent dataset straight from S3 (moto's server) with worker processes."""

import hashlib

from torch.utils.data import DataLoader

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.loader import LatentLoaderConfig, LatentShardDataset


def _seen(root: str, workers: int) -> list[tuple[str, int]]:
    """(hash of the whole ŷ grid, target) of every sample, in the order the loader yields them."""
    ds = LatentShardDataset(LatentLoaderConfig(root, train=False, window=None))
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [(hashlib.sha256(y.numpy().tobytes()).hexdigest()[:16], int(t)) for y, t in loader]


def test_loader_streams_from_s3_with_workers_like_from_disk(s3, photo_tree, tmp_path):
    s3.mkdir("loader-s3")
    opts = ConvertOptions(shard_size=3)
    convert_dataset(ConvertJob(str(photo_tree), "s3://loader-s3/ds", options=opts))
    convert_dataset(ConvertJob(str(photo_tree), str(tmp_path / "ds"), options=opts))
    remote = _seen("s3://loader-s3/ds", workers=2)
    assert len(remote) == 8 and len(set(remote)) == 8
    assert remote == _seen(str(tmp_path / "ds"), workers=2)  # same samples, same order
