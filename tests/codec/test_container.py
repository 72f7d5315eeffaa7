import pytest

from pipeline.codec.container import CONTAINER_VERSION, LatentContainer
from pipeline.errors import ContainerError


def _container(**kw):
    base = dict(coder="compressai-ans", fingerprint_prefix=bytes(range(8)), image_hw=(250, 333),
                padded_hw=(256, 384), y_shape=(96, 16, 24), z_shape=(64, 4, 6),
                strings=(b"\x01\x02\x03" * 50, b"zz" * 7))
    base.update(kw)
    return LatentContainer(**base)


def test_round_trip_keeps_every_field():
    c = _container()
    back = LatentContainer.unpack(c.pack())
    assert back == c
    assert back.valid_hw == (16, 21)  # ceil(250/16), ceil(333/16)


def test_factorized_container_has_no_z():
    c = _container(z_shape=None, strings=(b"abc",))
    assert LatentContainer.unpack(c.pack()).z_shape is None


@pytest.mark.parametrize("cut", [0, 1, 4, 10, 40, 60, -5, -1])
def test_truncated_container_raises_clean_error(cut):
    data = _container().pack()
    with pytest.raises(ContainerError):
        LatentContainer.unpack(data[:cut])


def test_every_single_flipped_byte_is_caught():
    data = bytearray(_container().pack())
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(ContainerError):
            LatentContainer.unpack(bytes(bad))


def test_unknown_version_is_named():
    import struct
    import zlib

    body = bytearray(_container().pack()[:-4])
    body[4] = CONTAINER_VERSION + 1
    data = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(ContainerError, match="version 2 is not supported"):
        LatentContainer.unpack(data)


def test_dimension_overflow_is_refused():
    with pytest.raises(ContainerError, match="does not fit"):
        _container(image_hw=(70000, 10)).pack()
