"""latent-shards library: sources, codec, shard format, loader and models (no Ray in here)."""

__version__ = "0.1.0"
