"""The runtime codec: what encoding and decoding need, and nothing else.

Registry, checkpoints, the `.latent` container, the entropy layer (CDF tables, the fast rANS
coder, the float and integer hyper-synthesis) and `Codec`. It may import `pipeline.errors`
and the storage helpers only: never models, sources, images or codec training
(`pipeline.codec_train`), so a decode-only user loads no classifier.
"""
