"""Exception types shared by the library; each names the bad value and how to fix it."""


class LatentShardsError(Exception):
    """Base class of every error latent-shards raises on purpose."""


class CodecError(LatentShardsError):
    """A codec cannot be built, loaded or used as asked."""


class FingerprintMismatch(CodecError):
    """A bitstream or dataset was written by another codec than the one at hand."""

    def __init__(self, expected: str, actual: str, where: str = ""):
        self.expected, self.actual = expected, actual
        place = f" ({where})" if where else ""
        super().__init__(
            f"codec fingerprint mismatch{place}: the data was written with {expected[:16]}…, "
            f"the codec at hand is {actual[:16]}…; decode with the dataset's own codec "
            "(OUT/codec/) or re-convert the data with this one"
        )


class ContainerError(LatentShardsError):
    """A `.latent` container is truncated, corrupted or of an unknown version."""


class ImageError(LatentShardsError):
    """One input image cannot become a sample; the message is its failure reason."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class DatasetError(LatentShardsError):
    """A latent dataset on disk is missing a part or disagrees with its manifest."""
