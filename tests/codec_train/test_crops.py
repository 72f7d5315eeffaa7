"""The one crop sampler: images read as the converter reads them (EXIF turn included), seeded
draws, small images scaled up to one crop, labels carried with their crops."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.codec_train.crops import CropSampler, SourceCrops, labelled_images, read_rgb, rescale
from pipeline.errors import ConfigError
from pipeline.images import ImagePolicy, prepare_image


def _exif_rotated(path, w=96, h=64) -> np.ndarray:
    """A ``w``×``h`` JPEG whose EXIF says "rotate 90° clockwise to view" (orientation 6):
    upright it is ``h`` wide and ``w`` tall. Returns the stored pixels."""
    px = np.zeros((h, w, 3), np.uint8)
    px[:] = (0, 255, 0)
    px[:, : w // 4] = (255, 0, 0)  # a red band on the stored left edge
    im = Image.fromarray(px)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, quality=95, exif=exif.tobytes())
    return px


def test_crops_read_images_upright_as_the_converter_does(tmp_path):
    _exif_rotated(tmp_path / "turned.jpg")
    img = read_rgb(str(tmp_path / "turned.jpg"))
    assert tuple(img.shape) == (3, 96, 64)  # turned: as tall as the stored image was wide
    converter = prepare_image((tmp_path / "turned.jpg").read_bytes(), ImagePolicy(size=0, multiple=1))
    assert torch.equal(img, torch.from_numpy(converter.pixels.copy()).permute(2, 0, 1).float() / 255)
    assert img[0, :8].mean() > 0.9 and img[1, :8].mean() < 0.1  # the red band is now on top


def test_source_crops_come_from_the_upright_image(tmp_path):
    (tmp_path / "a").mkdir()
    _exif_rotated(tmp_path / "a" / "turned.jpg", w=128, h=64)
    it = iter(SourceCrops(str(tmp_path), 64, scales=(1.0,), crops_per_image=8))
    # upright it is 64 wide and 128 tall with the red band across its top: a crop's red pixels
    # fill whole rows (read without the turn they would fill columns)
    reds = 0
    for _ in range(16):
        c = next(it)
        red = (c[0] > 0.5) & (c[1] < 0.5)
        rows = red.float().mean(1)
        assert bool(((rows > 0.9) | (rows < 0.1)).all())
        reds += int(red.any())
    assert reds  # some crops held the band


def test_sampler_draws_are_seeded_and_scale_small_images_up():
    rng = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 80, 100, generator=rng), torch.rand(3, 40, 50, generator=rng)]
    a = CropSampler(images, 64, (1.0, 0.5), seed=7).batch(6)
    b = CropSampler(images, 64, (1.0, 0.5), seed=7).batch(6)
    c = CropSampler(images, 64, (1.0, 0.5), seed=8).batch(6)
    assert torch.equal(a, b) and not torch.equal(a, c) and tuple(a.shape) == (6, 3, 64, 64)
    assert tuple(rescale(images[1], 0.5, 64).shape) == (3, 64, 80)  # never below one crop
    assert rescale(images[0], 1.0, 64) is images[0]


def test_a_sampler_state_is_its_rng():
    images = [torch.rand(3, 70, 90)]
    s = CropSampler(images, 64, seed=1)
    s.batch(3)
    state = s.rng.bit_generator.state
    ahead = s.batch(4)
    again = CropSampler(images, 64, seed=99)
    again.rng.bit_generator.state = state
    assert torch.equal(again.batch(4), ahead)


def test_labelled_crops_carry_their_class(tmp_path):
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (72, 72), colour).save(tmp_path / "train" / name / f"{i}.png")
    classes, images, labels = labelled_images(str(tmp_path))
    x, y = CropSampler(images, 64, seed=0, labels=labels, classes=classes).batch(8)
    assert classes == ("blue", "red") and tuple(x.shape) == (8, 3, 64, 64)
    for crop, label in zip(x, y, strict=True):  # the crop's colour names its class
        assert classes[int(label)] == ("red" if crop[0].mean() > 0.5 else "blue")


def test_no_labelled_images_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "only").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    (tmp_path / "train" / "only" / "x.png").write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="at least 2 classes"):
        labelled_images(str(tmp_path))


def test_dead_leaves_are_seeded_covered_and_coloured_from_the_photos():
    from pipeline.codec_train.synthetic import dead_leaves, dead_leaves_set

    two = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))]
    a, b = dead_leaves_set(2, 64, 5, two), dead_leaves_set(2, 64, 5, two)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and not torch.equal(a[0], a[1])
    one = [torch.tensor([[[0.2]], [[0.4]], [[0.6]]]).expand(3, 8, 8).contiguous()]
    # one colour in the photos: every pixel (edges averaged too) is that colour
    flat = dead_leaves_set(1, 64, 5, one)[0]
    assert torch.allclose(flat, one[0][:, :1, :1].expand(3, 64, 64), atol=1 / 255)
    palette = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    img = dead_leaves(96, np.random.default_rng(0), palette)
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours <= {(255, 0, 0), (0, 0, 255), (127, 0, 127)}  # the palette (and its mean in gaps)
    assert len(colours) >= 2
