"""Exception types shared by the library, each naming the bad value and how to fix it, and
the one enumeration of failure reasons (why an input did not become a sample)."""

import re
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit


class Reason(StrEnum):
    """Why an input is a row of ``failures.parquet`` instead of a sample. Stable strings:
    they are data (ledgers group by them; ``convert --retry-failed`` selects on them)."""

    EMPTY = "empty-file"  # zero bytes
    NOT_IMAGE = "not-an-image"  # text, HTML, a PDF… saved under an image name
    TRUNCATED = "truncated"  # the image data ends early
    BOMB = "decompression-bomb"  # declares more pixels than --max-pixels
    TOO_SMALL = "too-small"  # shorter side below --min-side
    TOO_LARGE = "too-large"  # a side beyond what the container stores (65 535)
    DECODE = "decode-error"  # the decoder failed otherwise
    NOT_A_FILE = "not-a-file"  # a folder named like an image, a dangling symlink
    OUTSIDE_CLASS = "outside-class-folder"  # an image beside the class folders of a class tree
    NO_LABEL = "no-label"  # an ImageNet val image the label files do not name
    MISSING = "missing"  # a listed file that is not there or not readable by this user
    READ_ERROR = "read-error"  # storage kept failing through the retries (I/O, time-out)
    ENCODE_ERROR = "encode-error"  # the codec raised on this image
    BAD_ANNOTATION = "bad-annotation"  # its annotation (boxes, mask) cannot be read or used

    @property
    def retryable(self) -> bool:
        """Whether a later run may succeed: the storage may answer then."""
        return self is Reason.READ_ERROR


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


class ConfigError(LatentShardsError, ValueError):
    """An option or configuration value that cannot work (``--batch-size 0``)."""


class TrainError(LatentShardsError):
    """A training run failed (it diverged, or a Ray Train worker raised); the cause is named."""


class SourceError(LatentShardsError):
    """The image source cannot be read as asked: no such layout, no images, no ``uri`` column."""


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact(text: str) -> str:
    """``text`` with every URL's credentials removed: ``user:password@`` goes, and every
    query value becomes ``***`` (presigned URLs carry their signature there). Manifests,
    plans, indices and error messages pass through this; paths without a scheme are kept."""
    def one(m: re.Match) -> str:
        url = m.group(0)
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = "&".join(f"{k}=***" if v else k for k, v in
                         (q.split("=", 1) if "=" in q else (q, "") for q in parts.query.split("&") if q))
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    return _URL.sub(one, str(text))
