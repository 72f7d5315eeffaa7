"""Boxes and masks through the latent crop and flip: hand-made cases, a raster reference, and
the loader end to end on converted detection scenes (cold and warm)."""

import random

import numpy as np
import pytest
import torch

from pipeline.loader.targets import Crop, ScaleAug, choose_crop, crop_boxes, crop_latent, crop_mask


def test_hand_made_boxes_under_crop_and_flip():
    # encoded image 64 x 96 px (a 4 x 6 grid); window 2 x 3 cells at top 1, left 2:
    # pixels x in [32, 80), y in [16, 48)
    boxes = np.array([[40, 20, 60, 40],    # inside: moves by (-32, -16)
                      [0, 0, 36, 30],      # 4 x 14 px of 36 x 30 left: under 30 %, dropped
                      [70, 40, 96, 64]])   # 10 x 8 of 26 x 24 (13 %): dropped at 0.3, kept at 0.1
    crop = Crop(top=1, left=2, height=2, width=3, flip=False)
    out, keep = crop_boxes(boxes, (64, 96), crop)
    assert keep.tolist() == [True, False, False] and out.tolist() == [[8, 4, 28, 24]]
    out, keep = crop_boxes(boxes, (64, 96), crop, min_visible=0.1)
    assert out.tolist() == [[8, 4, 28, 24], [38, 24, 48, 32]]
    flipped, _ = crop_boxes(boxes, (64, 96), Crop(1, 2, 2, 3, True), min_visible=0.1)
    assert flipped.tolist() == [[20, 4, 40, 24], [0, 24, 10, 32]]  # x -> 48 - x, ends swapped


def test_hand_made_mask_under_crop_flip_and_padding():
    mask = np.arange(32 * 48, dtype=np.int64).reshape(32, 48) % 7  # a 2 x 3 grid's image
    m = crop_mask(mask.astype(np.uint8), Crop(1, 1, 2, 2, False))  # half off the bottom edge
    assert m.shape == (32, 32)
    assert (m[:16, :] == mask[16:32, 16:48]).all() and (m[16:, :] == 255).all()
    f = crop_mask(mask.astype(np.uint8), Crop(0, 1, 2, 2, True))
    assert (f == mask[:, 16:48][:, ::-1]).all()


def test_boxes_agree_with_a_raster_reference():
    """Random integer boxes and crops: each kept box is the tight box of its pixels after
    cropping and mirroring a painted canvas; each dropped one kept under 30 % of its pixels."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        gh, gw = rng.integers(2, 6, 2)
        ih, iw = gh * 16 - rng.integers(0, 16), gw * 16 - rng.integers(0, 16)
        wh, ww = rng.integers(1, gh + 1), rng.integers(1, gw + 1)
        crop = Crop(int(rng.integers(0, gh - wh + 1)), int(rng.integers(0, gw - ww + 1)), int(wh), int(ww),
                    bool(rng.random() < 0.5))
        x0, y0 = rng.integers(0, iw - 1), rng.integers(0, ih - 1)
        box = np.array([[x0, y0, rng.integers(x0 + 1, iw + 1), rng.integers(y0 + 1, ih + 1)]])
        canvas = np.zeros((gh * 16, gw * 16), bool)
        canvas[box[0, 1] : box[0, 3], box[0, 0] : box[0, 2]] = True
        win = canvas[crop.top * 16 : (crop.top + wh) * 16, crop.left * 16 : (crop.left + ww) * 16]
        win = win[:, ::-1] if crop.flip else win
        out, keep = crop_boxes(box, (ih, iw), crop)
        if keep[0]:
            ys, xs = np.nonzero(win)
            assert out[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        else:
            assert win.sum() < 0.3 * canvas.sum() or not win.any()


def _scaled_crop(rng, gh, gw):
    wh, ww = (int(v) for v in rng.integers(1, 9, 2))
    rh, rw = int(rng.integers(1, gh + 1)), int(rng.integers(1, gw + 1))
    return Crop(int(rng.integers(0, gh - rh + 1)), int(rng.integers(0, gw - rw + 1)), wh, ww,
                bool(rng.random() < 0.5), rh, rw)


def test_scaled_boxes_follow_the_affine_map_and_agree_with_a_raster_reference():
    """A region of rh x rw cells resampled to the window: each kept box is the affine image of
    the clipped box; the canvas resampled by nearest sampling (what masks get) paints its tight
    box to within half an output pixel of it; dropped boxes kept under 30 % in the region."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        gh, gw = (int(v) for v in rng.integers(2, 7, 2))
        ih, iw = gh * 16 - int(rng.integers(0, 16)), gw * 16 - int(rng.integers(0, 16))
        crop = _scaled_crop(rng, gh, gw)
        x0, y0 = rng.integers(0, iw - 1), rng.integers(0, ih - 1)
        box = np.array([[x0, y0, rng.integers(x0 + 1, iw + 1), rng.integers(y0 + 1, ih + 1)]])
        canvas = np.zeros((ih, iw), np.uint8)
        canvas[box[0, 1] : box[0, 3], box[0, 0] : box[0, 2]] = 1
        out, keep = crop_boxes(box, (ih, iw), crop)
        rh, rw = crop.region
        region = canvas[crop.top * 16 : (crop.top + rh) * 16, crop.left * 16 : (crop.left + rw) * 16]
        if not keep[0]:
            assert region.sum() < 0.3 * canvas.sum() or not region.any()
            continue
        sx, sy = crop.width / rw, crop.height / rh
        c = np.clip(box[0].astype(float), [crop.left * 16, crop.top * 16] * 2,
                    [min(iw, (crop.left + rw) * 16), min(ih, (crop.top + rh) * 16)] * 2)
        want = (c - [crop.left * 16, crop.top * 16] * 2) * [sx, sy, sx, sy]
        if crop.flip:
            want = [crop.width * 16 - want[2], want[1], crop.width * 16 - want[0], want[3]]
        assert np.allclose(out[0], want)
        win = crop_mask(canvas, crop)  # nearest resampling of the painted canvas
        ys, xs = np.nonzero(win == 1)
        if len(xs):
            tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert np.all(np.abs(np.array(tight) - out[0]) <= 0.5 + 1e-9), (crop, box, tight, out)


def test_scaled_masks_are_torchs_nearest_and_latents_stay_integer():
    rng = np.random.default_rng(2)
    for _ in range(50):
        gh, gw = (int(v) for v in rng.integers(2, 6, 2))
        crop = _scaled_crop(rng, gh, gw)
        mask = rng.integers(0, 20, (gh * 16, gw * 16)).astype(np.uint8)
        rh, rw = crop.region
        region = torch.from_numpy(mask[crop.top * 16 : (crop.top + rh) * 16,
                                       crop.left * 16 : (crop.left + rw) * 16].astype(np.float32))
        ref = torch.nn.functional.interpolate(region[None, None], size=(crop.height * 16, crop.width * 16),
                                              mode="nearest-exact")[0, 0].numpy().astype(np.uint8)
        ref = ref[:, ::-1] if crop.flip else ref
        assert (crop_mask(mask, crop) == ref).all()
        y = torch.from_numpy(rng.integers(-9, 9, (3, gh, gw)).astype(np.float32))
        out = crop_latent(y, crop)
        assert out.shape == (3, crop.height, crop.width) and torch.equal(out, out.round())
        assert set(out.unique().tolist()) <= set(y.unique().tolist())
    y = torch.rand(3, 6, 6)
    for mode in ("bilinear", "area"):
        out = crop_latent(y, Crop(1, 1, 8, 8, False, 4, 4, mode))
        assert out.shape == (3, 8, 8) and y.min() - 1e-6 <= out.min() and out.max() <= y.max() + 1e-6


def test_regions_are_drawn_like_random_resized_crop():
    rng = random.Random(0)
    aug = ScaleAug(scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3))
    areas = []
    for _ in range(500):
        c = choose_crop((16, 21), (14, 14), rng, aug)
        rh, rw = c.region
        assert (c.height, c.width) == (14, 14) and 0 <= c.top <= 16 - rh and 0 <= c.left <= 21 - rw
        areas.append(rh * rw / (16 * 21))
    assert 0.2 < min(areas) < 0.35 and max(areas) > 0.9  # the scale range is used, whole cells
    assert choose_crop((16, 21), (14, 14), None, aug).region == (14, 14)  # evaluation: centre crop
    with pytest.raises(Exception, match="resample"):
        ScaleAug(resample="cubic")


def test_choose_crop_keeps_the_loaders_draws_and_pads_small_grids():
    y = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    a = choose_crop((3, 4), (2, 2), random.Random(5))
    r = random.Random(5)
    assert (a.top, a.left, a.flip) == (r.randint(0, 1), r.randint(0, 2), r.random() < 0.5)
    big = crop_latent(y, choose_crop((3, 4), (5, 4), None))
    assert big.shape == (2, 5, 4) and (big[:, :3] == y).all() and (big[:, 3:] == 0).all()


@pytest.fixture(scope="module")
def scenes_dataset(tmp_path_factory):
    from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
    from pipeline.images import ImagePolicy
    from pipeline.tasks.scenes import SceneTask, make_scene_task

    root = tmp_path_factory.mktemp("scenes")
    make_scene_task(root / "voc", SceneTask(train=6, val=2, size=128, min_side=24, max_side=60))
    convert_dataset(ConvertJob(str(root / "voc"), str(root / "ds"),  # key order: the pixel baseline's
                               options=ConvertOptions(ImagePolicy(size=0), shard_size=4, order="sorted")))
    return root / "ds"


def test_loader_yields_detection_and_segmentation_targets_cold_and_warm(scenes_dataset, tmp_path):
    import json

    import pandas as pd

    from pipeline.loader import LatentLoaderConfig, LatentShardDataset
    from pipeline.loader.targets import detection_collate

    index = pd.read_parquet(scenes_dataset / "index.parquet").set_index("key")
    cfg = LatentLoaderConfig(str(scenes_dataset), train=False, window=(6, 6), target="detection",
                             min_visible=0.0001)
    got = list(LatentShardDataset(cfg))
    assert len(got) == 6
    keys = list(index[index["split"] == "train"].index)
    for (y, t), key in zip(got, keys, strict=True):
        assert y.shape == (index.loc[key, "latent_c"], 6, 6) and t["mask"].shape == (96, 96)
        # centre crop of an 8 x 8 grid: cells 1..7, pixels 16..112; boxes move by -16
        boxes = json.loads(index.loc[key, "targets"])["boxes"]
        px = np.array([b["xyxy"] for b in boxes]).reshape(-1, 4) * 128
        want = np.clip(px, 16, 112) - 16
        want = want[(want[:, 2] - want[:, 0] >= 1) & (want[:, 3] - want[:, 1] >= 1)]
        np.testing.assert_allclose(t["boxes"].numpy().reshape(-1, 4), want, atol=1e-4)
        assert t["labels"].dtype == torch.int64 and len(t["labels"]) == len(want)
        # every kept box's class is painted inside it in the mask
        for b, label in zip(t["boxes"].round().long().tolist(), t["labels"].tolist(), strict=True):
            assert (t["mask"][b[1] : b[3], b[0] : b[2]] == label + 1).any()
    ys, targets = detection_collate(got[:3])
    assert ys.shape[0] == 3 and len(targets) == 3
    # warm: the second pass reads ŷ and the payloads from the cache, and gives the same targets
    wcfg = LatentLoaderConfig(str(scenes_dataset), window=(6, 6), target="detection", seed=3,
                              cache=str(tmp_path / "cache"))
    cold, warm = list(LatentShardDataset(wcfg)), list(LatentShardDataset(wcfg))
    for (y1, t1), (y2, t2) in zip(cold, warm, strict=True):
        assert torch.equal(y1, y2) and all(torch.equal(t1[k], t2[k]) for k in t1)
    seg = list(LatentShardDataset(LatentLoaderConfig(str(scenes_dataset), split="val", train=False,
                                                     window=(8, 8), target="segmentation")))
    assert [tuple(t["mask"].shape) for _, t in seg] == [(128, 128)] * 2
    assert all(set(t["mask"].unique().tolist()) >= {0} for _, t in seg)


def test_boxes_follow_the_converters_resize_and_centre_crop():
    from pipeline.loader.targets import encoded_boxes

    box = np.array([[0.0, 0.0, 0.5, 0.5]])  # the top-left quarter of an 80 x 60 image
    # --size 30: 40 x 30, no crop
    assert encoded_boxes(box, (60, 80), (30, 40)).tolist() == [[0, 0, 20, 15]]
    # --size 32 --crop: resized to 43 x 32, then 5 px cut on the left
    np.testing.assert_allclose(encoded_boxes(box, (60, 80), (32, 32)), [[-5, 0, 43 / 2 - 5, 16]])
    # --size 0: the image as it is
    assert encoded_boxes(box, (60, 80), (60, 80)).tolist() == [[0, 0, 40, 30]]


def test_a_sample_without_a_mask_counts_nothing_in_segmentation():
    import json

    from pipeline.loader.targets import build_target, pack_payload

    blob = pack_payload(json.dumps({"key": "k", "enc_hw": [32, 32], "orig_hw": [32, 32]}).encode(), None)
    t = build_target("segmentation", blob, Crop(0, 0, 2, 2, False))
    assert t["mask"].shape == (32, 32) and (t["mask"] == 255).all()


def test_pixel_baseline_windows_carry_the_same_targets_as_the_latent_ones(scenes_dataset):
    """The pixel baselines' input: the source scenes made ready like the converter and cut by
    the same rule give, image by image, the boxes and masks the ŷ loader gives."""
    from pipeline.images import ImagePolicy
    from pipeline.loader import LatentLoaderConfig, LatentShardDataset
    from pipeline.train.pixel_detect import PixelDetectionDataset

    latent = list(LatentShardDataset(LatentLoaderConfig(str(scenes_dataset), train=False, window=None,
                                                        target="detection")))
    pixels = PixelDetectionDataset(str(scenes_dataset.parent / "voc"), "train", None, "detection",
                                   policy=ImagePolicy(size=0))
    assert len(pixels) == len(latent) == 6
    for i, (y, t) in enumerate(latent):
        x, p = pixels[i]
        assert x.shape[1:] == (16 * y.shape[1], 16 * y.shape[2])
        assert torch.equal(p["boxes"], t["boxes"]) and torch.equal(p["labels"], t["labels"])
        assert torch.equal(p["mask"], t["mask"])
    train = PixelDetectionDataset(str(scenes_dataset.parent / "voc"), "train", (4, 4), "segmentation")
    x, t = train[0]
    assert x.shape == (3, 64, 64) and t["mask"].shape == (64, 64)


def test_one_scale_policy_gives_pixels_and_latents_the_same_region_and_boxes(scenes_dataset):
    """The same draw (a region resampled to the window, flipped) cuts the pixel window and the
    ŷ window of the same region, and gives both the same boxes and mask."""
    import json

    import pandas as pd

    from pipeline.images import ImagePolicy, prepare_image
    from pipeline.loader.targets import target_of
    from pipeline.shards.dataset import LatentDataset
    from pipeline.sources import read_bytes
    from pipeline.train.pixel_detect import PixelDetectionDataset

    aug = ScaleAug(scale=(0.2, 0.9))
    pixels = PixelDetectionDataset(str(scenes_dataset.parent / "voc"), "train", (5, 5), "detection", seed=3,
                                   policy=ImagePolicy(size=0), augment=aug)
    data = LatentDataset.open(str(scenes_dataset))
    index = pd.read_parquet(scenes_dataset / "index.parquet").set_index("key")
    for i in range(len(pixels)):
        x, p = pixels[i]
        item = pixels.items[i]
        img = prepare_image(read_bytes(item.uri), ImagePolicy(size=0))
        crop = choose_crop((img.padded_hw[0] // 16, img.padded_hw[1] // 16), (5, 5),
                           random.Random(hash((3, 0, i))), aug)
        assert torch.equal(x, PixelDetectionDataset.cut(img.pixels, crop))  # the same draw as ŷ's rule
        assert x.shape == (3, 80, 80)
        meta = {"enc_hw": list(img.enc_hw), "orig_hw": list(img.orig_hw),
                "targets": json.loads(index.loc[item.key, "targets"])}
        t = target_of("detection", meta, None, crop)
        assert torch.equal(p["boxes"], t["boxes"]) and torch.equal(p["labels"], t["labels"])
        y = crop_latent(data.load_codec().decode_y(data.latent_bytes(item.key)), crop)
        assert y.shape[1:] == (5, 5) and torch.equal(y, y.round())


def test_warming_a_detection_cache_runs_the_loaders_own_decode_stage(scenes_dataset, tmp_path):
    from pipeline.loader import LatentLoaderConfig, LatentShardDataset
    from pipeline.loader.warm import warm_cache

    res = warm_cache(str(scenes_dataset), str(tmp_path / "c"), target="detection")
    assert res.samples == res.expected == 8
    cfg = LatentLoaderConfig(str(scenes_dataset), train=False, window=(6, 6), target="detection",
                             cache=str(tmp_path / "c"))
    ds = LatentShardDataset(cfg)
    assert all(len(ds.cache.positions(ds.shard_sha256(name), 0, n)) == n for _, name, n in ds.shards)
    cold = list(LatentShardDataset(LatentLoaderConfig(str(scenes_dataset), train=False, window=(6, 6),
                                                      target="detection")))
    for (y1, t1), (y2, t2) in zip(cold, ds, strict=True):
        assert torch.equal(y1, y2) and all(torch.equal(t1[k], t2[k]) for k in t1)


def test_the_loader_resamples_regions_and_carries_targets_with_them(scenes_dataset, tmp_path):
    """Scale augmentation in the loader: windows of the asked size from regions of other sizes,
    ŷ integer (nearest), boxes inside the window with their class painted in the resampled
    mask; the warm cache gives the same samples; evaluation ignores the augmentation."""
    from pipeline.loader import LatentLoaderConfig, LatentShardDataset

    aug = ScaleAug(scale=(0.2, 1.0), resample="nearest")
    cfg = LatentLoaderConfig(str(scenes_dataset), window=(6, 6), target="detection", seed=1, augment=aug,
                             min_visible=0.01, cache=str(tmp_path / "c"))
    cold = list(LatentShardDataset(cfg))
    warm = list(LatentShardDataset(cfg))
    plain = list(LatentShardDataset(LatentLoaderConfig(str(scenes_dataset), window=(6, 6), seed=1,
                                                       target="detection")))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(cold, plain, strict=True))  # regions differ
    for (y, t), (y2, t2) in zip(cold, warm, strict=True):
        assert y.shape[1:] == (6, 6) and torch.equal(y, y.round())
        assert torch.equal(y, y2) and all(torch.equal(t[k], t2[k]) for k in t)
        b = t["boxes"]
        assert ((b >= 0) & (b <= 96)).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        for box, label in zip(b.floor().long().tolist(), t["labels"].tolist(), strict=True):
            x0, y0, x1, y1 = box
            assert (t["mask"][y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] == label + 1).any()
    evaluation = LatentLoaderConfig(str(scenes_dataset), train=False, window=(6, 6), augment=aug)
    same = LatentLoaderConfig(str(scenes_dataset), train=False, window=(6, 6))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(LatentShardDataset(evaluation),
                                                       LatentShardDataset(same), strict=True))
