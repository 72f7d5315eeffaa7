"""Training straight from latent shards: it learns, the pixel baseline runs, DDP ranks agree."""

import json

import pytest

from jobs.convert_cli import run_convert
from pipeline.convert import ConvertJob, ConvertOptions
from pipeline.images import ImagePolicy
from pipeline.tasks.classification import PhotoTask, make_photo_task
from pipeline.train.classify import TrainConfig, train_classifier
from pipeline.train.data import InputSpec


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    meta = make_photo_task(root / "jpeg", PhotoTask(train_per_class=24, val_per_class=8, size=128))
    run_convert(ConvertJob(str(root / "jpeg"), str(root / "latent"),
                           options=ConvertOptions(ImagePolicy(size=128), shard_size=64)), "local")
    return root, meta


def test_task_generator_is_deterministic(tmp_path):
    small = PhotoTask(train_per_class=2, val_per_class=1, size=64)
    make_photo_task(tmp_path / "a", small)
    make_photo_task(tmp_path / "b", small)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert a and all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in a)


def test_sresnet18_learns_from_latents_well_above_chance(task, tmp_path):
    """Epoch 1 decodes ŷ and fills the warm cache; epochs 2-6 read it (same samples, see test_cache)."""
    root, meta = task
    cfg = TrainConfig(InputSpec(str(root / "latent"), window=(6, 6), batch_size=8, workers=2,
                                cache=str(tmp_path / "cache")),
                      arch="sresnet18", epochs=6, lr=0.03, out=str(tmp_path / "run"))
    steps = []
    r = train_classifier(cfg, log=lambda rec: None, on_batch=lambda e, b, n, loss: steps.append(b))
    assert len(steps) >= 200  # a few hundred SGD steps
    chance = 1 / len(meta["classes"])
    assert r["history"][-1]["val_top1"] > 3 * chance
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["val_n"] == 8 * len(meta["classes"])
    from pipeline.loader.cache import LatentCache
    from pipeline.shards.dataset import LatentDataset

    ds = LatentDataset.open(str(root / "latent"))
    cache = LatentCache.for_dataset(tmp_path / "cache", ds)
    assert cache.stats()["samples"] == ds.manifest.totals.samples  # train and val, all cached
    import torch

    ck = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert ck["classes"] == sorted(meta["classes"]) and len(ck["codec_fingerprint"]) == 64


def test_pixel_baseline_and_input_mismatch(task, tmp_path):
    root, _ = task
    cfg = TrainConfig(InputSpec(str(root / "jpeg"), kind="pixels", window=(4, 4), batch_size=32, workers=0),
                      arch="resnet18", epochs=1)
    r = train_classifier(cfg, log=lambda rec: None)
    assert r["history"][0]["val_n"] > 0
    with pytest.raises(ValueError, match="takes latent"):
        train_classifier(TrainConfig(cfg.input, arch="sresnet18", epochs=1), log=lambda rec: None)


@pytest.mark.ray
def test_ray_train_two_workers_disjoint_and_equal(ray_cluster, task, tmp_path):
    from jobs.train import run_ray

    root, _ = task
    cfg = TrainConfig(InputSpec(str(root / "latent"), window=(4, 4), batch_size=16, workers=1),
                      arch="sresnet18", epochs=1, out=str(tmp_path / "ray"))
    res = run_ray(cfg, workers=2, use_gpu=False, trace_dir=str(tmp_path))
    assert res.error is None
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["batches_per_epoch"] == ranks[1]["batches_per_epoch"]
    a, b = ({tuple(s) for s in r["samples"]} for r in ranks)
    assert len(a) == len(b) == len(ranks[0]["samples"]) and not a & b


def test_fewshot_cli_writes_table(task, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    root, meta = task
    out = tmp_path / "fs.json"
    res = CliRunner().invoke(app, [
        "fewshot", "classify", "--data", str(root / "latent"),
        "--split-file", str(root / "jpeg" / "fewshot.json"),
        "--base-epochs", "2", "--shots", "1,5", "--seeds", "2", "--window", "6", "--batch-size", "16",
        "--output", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert [row["shots"] for row in r["rows"]] == [1, 5] and r["novel_classes"] == meta["novel"]
    assert all(0 <= row["novel_mean"] <= 1 and row["seeds"] == 2 for row in r["rows"])
    chance = 1 / len(meta["classes"])
    assert r["rows"][1]["novel_mean"] > chance  # 5 shots of an unseen class beat guessing
    assert "novel" in res.output and "±" in res.output


def test_cli_train_classify_takes_the_cache_options(task, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    root, _ = task
    res = CliRunner().invoke(app, ["train", "classify", "--data", str(root / "latent"),
                                   "--model", "cresnet18", "--epochs", "1", "--window", "4",
                                   "--batch-size", "32", "--workers", "0",
                                   "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c"),
                                   "--cache-gb", "0.0002"])
    assert res.exit_code == 0, res.output
    from pipeline.loader.cache import LatentCache
    from pipeline.shards.dataset import LatentDataset

    ds = LatentDataset.open(str(root / "latent"))
    st = LatentCache.for_dataset(tmp_path / "c", ds).stats()
    assert 0 < st["bytes"] <= int(0.0002 * 2**30)  # bounded by --cache-gb
    assert st["samples"] < ds.manifest.totals.samples  # so shards were evicted


@pytest.mark.ray
def test_ray_train_codec_on_two_cpu_workers_converts_and_decodes(ray_cluster, tmp_path, photo_tree):
    """Two steps on 2 Ray Train workers: one checkpoint (rank 0), with CDF tables, that converts
    the photos and decodes every latent."""
    from jobs.train import run_codec_ray
    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec
    from pipeline.codec_train.train import CodecTrainConfig
    from pipeline.shards.verify import verify

    out = tmp_path / "codec.pt"
    cfg = CodecTrainConfig(out=str(out), arch="bmshj2018-hyperprior", N=8, M=8, steps=2, batch_size=2,
                           patch=64, threads=1, source=str(photo_tree), workers=0)
    res = run_codec_ray(cfg, workers=2)
    assert res.error is None
    ck = checkpoint.read(str(out))
    assert checkpoint.has_cdf_tables(ck.state_dict) and ck.metadata["step"] == 2
    run_convert(ConvertJob(str(photo_tree), str(tmp_path / "ds"), codec=CodecSpec(checkpoint=str(out)),
                           options=ConvertOptions(shard_size=4)), "local")
    rep = verify(str(tmp_path / "ds"))
    assert rep.ok and rep.decoded == 8


def test_one_augment_policy_for_every_arm():
    from torchvision import transforms

    from jobs.train_cli import augment
    from pipeline.errors import ConfigError

    usual = augment(None, None, "0.75,1.3333", "nearest")
    assert usual.policy == "usual" and usual.latent() is None
    assert isinstance(usual.pixel_transforms(96)[0], transforms.RandomResizedCrop)
    window = augment("window", None, "0.75,1.3333", "nearest")
    assert window.latent() is None and isinstance(window.pixel_transforms(96)[0], transforms.RandomCrop)
    scale = augment(None, "0.3,0.9", "0.5,2", "bilinear")  # --scale-aug alone: the scale policy
    rrc = scale.pixel_transforms(96)[0]
    assert scale.latent().scale == (0.3, 0.9) and scale.latent().resample == "bilinear"
    assert rrc.scale == (0.3, 0.9) and rrc.ratio == (0.5, 2.0)  # the same bounds in pixel units
    with pytest.raises(ConfigError, match="--augment"):
        augment("zoom", None, "0.75,1.3333", "nearest")
    members = augment("members", None, "0.75,1.3333", "nearest", "1,0.5")
    assert members.latent() is None and members.latent_members() == (1.0, 0.5)
    assert members.stored_scales() == (0.5,) and usual.stored_scales() == ()
    import torch
    from PIL import Image

    torch.manual_seed(0)
    rescale, crop, _ = members.pixel_transforms(96)
    sizes = {rescale(Image.new("RGB", (200, 120))).size for _ in range(40)}
    assert sizes == {(200, 120), (100, 60)} and crop.size == (96, 96)  # both drawn, then a window
    with pytest.raises(ConfigError, match="--members"):
        augment("members", None, "0.75,1.3333", "nearest", "1,1.5")
