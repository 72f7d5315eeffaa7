"""Streaming ŷ loader over latent shards (entropy decode in DataLoader workers, never pixels):
the IterableDataset, its stages, targets through crop and flip, the warm decoded cache.

It may import the shard format, images, the runtime codec and storage: not models or training.
"""

from pipeline.loader.dataset import LatentLoaderConfig, LatentShardDataset

__all__ = ["LatentLoaderConfig", "LatentShardDataset"]
