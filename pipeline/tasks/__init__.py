"""The CPU-sized tasks that ship with latent-shards: the bundled photos (`photos`), the
classification tasks made from them (`classification`: photo-crops, grey-textures) and the
VOC-layout detection scenes (`scenes`).

It may import `pipeline.errors` and `pipeline.images`; codec training, evaluation, the
benchmarks and the tests build on it.
"""
