"""Streaming ŷ loader over latent shards (entropy decode in DataLoader workers, never pixels)."""

from pipeline.loader.dataset import LatentLoaderConfig, LatentShardDataset

__all__ = ["LatentLoaderConfig", "LatentShardDataset"]
