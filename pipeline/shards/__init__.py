"""The on-disk format of a latent dataset: layout, tar shards, Parquet indices, manifest,
the opened dataset, `verify` and the one-writer lease.

It may import the runtime codec, storage, names and errors: not sources, images or anything
that converts, loads or trains.
"""
