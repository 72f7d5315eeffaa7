"""Each kind of bad or odd input becomes a correct image or a specific failure reason."""

import numpy as np
import pytest
from PIL import Image

from pipeline import images
from pipeline.errors import ImageError
from pipeline.images import ImagePolicy, prepare_image
from tests.conftest import bad_inputs

BAD = bad_inputs()
POLICY = ImagePolicy()


@pytest.mark.parametrize("name, reason", [
    ("zero.jpg", images.EMPTY),
    ("truncated.jpg", images.TRUNCATED),
    ("text.jpg", images.NOT_IMAGE),
    ("page.jpg", images.NOT_IMAGE),
    ("one.png", images.TOO_SMALL),
    ("seven-high.png", images.TOO_SMALL),
    ("bomb.png", images.BOMB),
])
def test_rejected_with_reason(name, reason):
    with pytest.raises(ImageError) as info:
        prepare_image(BAD[name], POLICY)
    assert info.value.reason == reason
    assert info.value.detail


def test_html_and_text_are_told_apart():
    with pytest.raises(ImageError, match="HTML"):
        prepare_image(BAD["page.jpg"], POLICY)
    with pytest.raises(ImageError, match="plain text"):
        prepare_image(BAD["text.jpg"], POLICY)


def test_bomb_is_refused_before_decoding_even_under_pillows_limit():
    small_limit = ImagePolicy(max_pixels=10_000)
    from tests.conftest import bomb_png

    with pytest.raises(ImageError, match="above the 0.0 MP limit|MP limit") as info:
        prepare_image(bomb_png(200, 200), small_limit)
    assert info.value.reason == images.BOMB


@pytest.mark.parametrize("name, mode", [
    ("cmyk.jpg", "CMYK"), ("sixteen.png", "I;16"), ("palette.png", "P"), ("rgba.png", "RGBA"),
])
def test_odd_modes_become_rgb(name, mode):
    p = prepare_image(BAD[name], POLICY)
    assert p.source_mode.startswith(mode[:1])
    assert p.pixels.dtype == np.uint8 and p.pixels.shape[2] == 3
    assert p.padded_hw[0] % 64 == 0 and p.padded_hw[1] % 64 == 0
    assert min(p.enc_hw) == 256


def test_sixteen_bit_is_scaled_not_clipped():
    # The 16-bit gradient spans 0..65k; clipping to 8 bits would saturate almost everything.
    p = prepare_image(BAD["sixteen.png"], ImagePolicy(size=0))
    row = p.pixels[0, : p.enc_hw[1], 0].astype(int)
    assert row[0] < 10 and row[-1] > 240 and len(np.unique(row)) > 50


def test_rgba_is_composited_on_white():
    p = prepare_image(BAD["rgba.png"], ImagePolicy(size=0))
    # alpha 128 over white lifts every channel well above the darkest original values
    assert p.pixels[: p.enc_hw[0], : p.enc_hw[1]].min() >= 120


def test_exif_rotation_gives_upright_sample():
    p = prepare_image(BAD["rotated.jpg"], ImagePolicy(size=0))
    assert p.orig_hw == (96, 48) and p.exif_transposed
    top, bottom = p.pixels[5:40, 5:40].mean((0, 1)), p.pixels[56:90, 5:40].mean((0, 1))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_resize_policy_shorter_side_and_crop():
    from tests.conftest import _save, gradient

    data = _save(Image.fromarray(gradient(300, 500)), "PNG")
    p = prepare_image(data, ImagePolicy(size=256))
    assert p.enc_hw == (256, 427) and p.padded_hw == (256, 448)
    c = prepare_image(data, ImagePolicy(size=256, crop=True))
    assert c.enc_hw == (256, 256) == c.padded_hw


def test_padding_is_right_and_bottom_edge_replicated():
    arr = np.arange(30 * 40 * 3, dtype=np.uint8).reshape(30, 40, 3)
    out = images.pad_to_multiple(arr, 64)
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out[:30, :40], arr)
    assert np.array_equal(out[40, :40], arr[-1]) and np.array_equal(out[:30, 50], arr[:, -1])


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        ImagePolicy(size=0, crop=True)


def test_thin_strip_that_would_blow_up_when_resized_is_refused():
    from tests.conftest import _save, gradient

    strip = _save(Image.fromarray(gradient(16, 4000)), "PNG")  # 64k px, 256 x 64000 resized
    with pytest.raises(ImageError) as info:
        prepare_image(strip, ImagePolicy(max_pixels=5_000_000))
    assert info.value.reason == images.TOO_LARGE and "--crop" in info.value.detail
    assert prepare_image(strip, ImagePolicy(crop=True)).enc_hw == (256, 256)

