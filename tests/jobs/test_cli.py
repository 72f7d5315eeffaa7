"""The `latents` commands as a user runs them."""

import json
import re
import warnings

import pytest
from PIL import Image
from typer.testing import CliRunner

from jobs.cli import app

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
runner = CliRunner()


@pytest.fixture()
def converted(photo_tree, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["convert", str(photo_tree), str(out), "--shard-size", "5",
                              "--no-progress", "--executor", "local"])
    assert res.exit_code == 0, res.output
    assert "converted 2 shard(s)" in res.output and "storage ratio" in res.output
    assert re.search(r"storage ratio\s+│?\s*\d+\.\dx", res.output), res.output  # one decimal
    return out


def test_inspect_json_figures(converted):
    res = runner.invoke(app, ["inspect", str(converted), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["samples"] == 8 and s["shards"] == 2 and s["failures"] == 0
    assert 0 < s["bpp_p50"] <= s["bpp_p95"] and s["storage_ratio"] > 1


def test_verify_exit_codes(converted):
    assert runner.invoke(app, ["verify", str(converted)]).exit_code == 0
    tar = sorted((converted / "shards").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[700] ^= 1
    tar.write_bytes(bytes(data))
    res = runner.invoke(app, ["verify", str(converted)])
    assert res.exit_code == 1 and tar.stem in res.output


def test_decode_writes_png_of_encoded_size(converted, tmp_path):
    import pandas as pd

    row = pd.read_parquet(converted / "index.parquet").iloc[0]
    res = runner.invoke(app, ["decode", str(converted), row["key"], "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "x.png").size == (row["enc_w"], row["enc_h"])
    bad = runner.invoke(app, ["decode", str(converted), "no-such-key", "-o", str(tmp_path / "y.png")])
    assert bad.exit_code == 2 and "no sample with key" in bad.output


def test_missing_dataset_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2 and "manifest.json not found" in res.output


def test_demo_makes_dataset_table_and_sheet(tmp_path):
    res = runner.invoke(app, ["demo", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / "dataset" / "manifest.json").is_file()
    assert "bpp mean" in res.output
    # the sheet: one 320-px-high tile per sample (original above its reconstruction, 6 a row,
    # 6-px gaps), and each reconstruction looks like the original above it
    import json

    import numpy as np

    n = json.loads((tmp_path / "demo" / "dataset" / "manifest.json").read_text())["totals"]["samples"]
    sheet = np.asarray(Image.open(tmp_path / "demo" / "reconstructions.png").convert("RGB")).astype(float)
    assert n >= 6 and sheet.shape[0] == -(-n // 6) * (320 + 6)
    first = sheet[:320, :120]  # well inside the first tile (every tile is wider than 120 px)
    top, bottom = first[:160], first[160:]
    psnr = 10 * np.log10(255**2 / np.mean((top - bottom) ** 2))
    other = sheet[:160, -200:-80] if sheet.shape[1] > 400 else sheet[326:486, :120]
    assert psnr > 20, psnr  # the reconstruction matches its original...
    assert np.mean((top - other) ** 2) > np.mean((top - bottom) ** 2)  # ...better than another photo


def test_train_codec_tiny_run_writes_finalized_checkpoint(tmp_path):
    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec, load_codec

    out = tmp_path / "c.pt"
    res = runner.invoke(app, ["train-codec", str(out), "--N", "8", "--M", "8", "--steps", "2",
                              "--batch-size", "2", "--patch", "64", "--threads", "1"])
    assert res.exit_code == 0, res.output
    ck = checkpoint.read(str(out))
    assert checkpoint.has_cdf_tables(ck.state_dict) and ck.metadata["step"] == 2
    assert ck.metadata["command"].startswith("latents train-codec")
    codec = load_codec(CodecSpec(checkpoint=str(out)))
    assert codec.identity.M == 8


def test_train_codec_with_a_classification_utility(tmp_path):
    """Eq. 6 from the command line: a 2-step run on a tiny labelled task records λ_d, λ_t, the
    task and its classes, writes the head, and its codec converts and decodes."""
    import torch

    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec
    from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
    from pipeline.shards.verify import verify
    from pipeline.tasks.classification import PhotoTask, make_photo_task

    make_photo_task(tmp_path / "task", PhotoTask(train_per_class=2, val_per_class=1, size=64))
    out = tmp_path / "c.pt"
    res = runner.invoke(app, ["train-codec", str(out), "--codec-arch", "bmshj2018-hyperprior", "--N", "8",
                              "--M", "8", "--steps", "2", "--batch-size", "2", "--patch", "64",
                              "--threads", "1",
                              "--utility", "classify", "--task-source", str(tmp_path / "task"),
                              "--lmbda-t", "5", "--task-batch-size", "4"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert " task " in res.output  # the λ_t-weighted task loss is logged
    ck = checkpoint.read(str(out))
    u = ck.metadata["utility"]
    assert (u["task"], u["lmbda_d"], u["lmbda_t"]) == ("classify", 0.013, 5.0) and u["task_batch_size"] == 4
    head = torch.load(tmp_path / "c.pt.head.pt", weights_only=False)
    assert head["classes"] == u["classes"] and len(u["classes"]) >= 2 and head["arch"] == "sresnet18"
    assert "--utility classify" in ck.metadata["command"]
    convert_dataset(ConvertJob(str(tmp_path / "task" / "val"), str(tmp_path / "ds"),
                               codec=CodecSpec(checkpoint=str(out)), options=ConvertOptions(shard_size=4)))
    assert verify(str(tmp_path / "ds")).ok


def test_streamed_task_crops_carry_their_class_and_train_a_codec(tmp_path):
    """--task-workers: the task batches stream from the labelled source (nothing held but the
    listing); each crop's label is its image's class folder."""
    import itertools

    import numpy as np

    from pipeline.codec import checkpoint
    from pipeline.codec_train.crops import SourceCrops
    from pipeline.tasks.classification import make_photo_task, task_recipe

    meta = make_photo_task(tmp_path / "task", task_recipe("photo-crops", train_per_class=2, val_per_class=1,
                                                          size=64))
    ds = SourceCrops(str(tmp_path / "task"), 64, labelled=True, crops_per_image=1)
    assert ds.classes == tuple(sorted(meta["classes"]))  # a class tree: sorted folder names
    train = tmp_path / "task" / "train"
    means = {name: [float(np.asarray(Image.open(f), dtype=np.float64).mean())
                    for f in sorted((train / name).iterdir())] for name in meta["classes"]}
    labels = set()
    for crop, label in itertools.islice(iter(ds), 2 * len(meta["classes"])):
        # a 64-px crop of a 64-px image is the image (maybe mirrored): its mean is one of its class's
        assert min(abs(float(crop.mean()) * 255 - m) for m in means[ds.classes[label]]) < 0.5
        labels.add(label)
    assert labels == set(range(len(meta["classes"])))
    out = tmp_path / "c.pt"
    res = runner.invoke(app, ["train-codec", str(out), "--codec-arch", "bmshj2018-hyperprior", "--N", "8",
                              "--M", "8", "--steps", "2", "--batch-size", "2", "--patch", "64",
                              "--threads", "1", "--utility", "classify", "--task-source",
                              str(tmp_path / "task"), "--task-batch-size", "4", "--task-workers", "1"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    ck = checkpoint.read(str(out))
    assert ck.metadata["utility"]["classes"] == list(ds.classes)
    assert "--task-workers 1" in ck.metadata["command"]


def test_train_codec_then_integerize_warm_started(tmp_path):
    """A scale-only codec warm-started from another, then given an exact integer h_s."""
    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec, load_codec

    first, second, final = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    common = ["--N", "8", "--M", "8", "--steps", "2", "--batch-size", "2", "--patch", "64", "--threads", "1"]
    assert runner.invoke(app, ["train-codec", str(first), *common]).exit_code == 0
    res = runner.invoke(app, ["train-codec", str(second), "--codec-arch", "bmshj2018-hyperprior", *common,
                              "--init-from", str(first)])
    assert res.exit_code == 0, res.output
    assert checkpoint.read(str(second)).metadata["command"].endswith(f"--init-from {first}")
    res = runner.invoke(app, ["integerize", str(second), str(final), "--steps", "0", "--crops", "8",
                              "--threads", "1", "--output", str(tmp_path / "cost.json")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "held out" in res.output and "rate cost" in res.output
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert set(cost["rate_cost"]) == {"held out", "training"}
    codec = load_codec(CodecSpec(checkpoint=str(final)))
    assert codec.entropy_params.startswith("h_s/integer")
    res = runner.invoke(app, ["integerize", str(tmp_path / "missing.pt"), str(final)])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_bench_profiles_print_and_write_json(tmp_path):
    res = runner.invoke(app, ["bench", "--no-pipeline", "--output", str(tmp_path / "b.json")],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "decode_y, fast path" in res.output and "ŷ decode ÷ JPEG decode" in res.output
    f = json.loads((tmp_path / "b.json").read_text())
    assert set(f) == {"codec", "encode", "decode"} and f["decode"]["fast_decoder"] is True
    assert f["codec"]["entropy_params"] == f["decode"]["entropy_params"]



def test_cache_warm_info_clear(converted, tmp_path):
    cache = str(tmp_path / "cache")
    res = runner.invoke(app, ["cache", "info", str(converted), "--cache", cache])
    assert res.exit_code == 0 and "no cache" in res.output
    res = runner.invoke(app, ["cache", "warm", str(converted), "--cache", cache, "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "8 of 8 samples cached from 2 shard(s)" in res.output
    res = runner.invoke(app, ["cache", "info", str(converted), "--cache", cache])
    assert res.exit_code == 0 and json.loads(res.output)["samples"] == 8
    # a lower limit (about 100 bytes, less than one sample) evicts on open and admits nothing more
    res = runner.invoke(app, ["cache", "warm", str(converted), "--cache", cache, "--cache-gb", "0.0000001"])
    assert res.exit_code == 0 and "0 of 8" in res.output and "is full" in res.output
    res = runner.invoke(app, ["cache", "clear", str(converted), "--cache", cache])
    assert res.exit_code == 0 and "removed" in res.output
    res = runner.invoke(app, ["cache", "info", str(converted), "--cache", cache])
    assert res.output.startswith("no cache")


def test_eval_rd_curve_of_several_checkpoints_on_a_folder(tmp_path):
    import numpy as np

    from pipeline.codec import checkpoint
    from pipeline.tasks.photos import bundled_photos
    from tests.conftest import tiny_checkpoint

    paths = []
    for i, lmbda in enumerate((0.001, 0.01, 0.1)):
        ck = tiny_checkpoint("bmshj2018-hyperprior", seed=i)
        ck = checkpoint.Checkpoint(ck.arch, ck.N, ck.M, ck.state_dict, lmbda=lmbda)
        paths.append(tmp_path / f"c{i}.pt")
        checkpoint.save(ck, str(paths[i]))
    kodak = tmp_path / "kodak"  # a Kodak-style folder: PNGs, any size
    kodak.mkdir()
    for p in bundled_photos(colour_only=True)[:2]:
        Image.open(p.path).convert("RGB").resize((256, 192)).save(kodak / f"{p.name}.png")
    args = ["eval", "rd", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]),
            "--baseline", str(paths[2]), "--images", str(kodak), "--plot", str(tmp_path / "rd.png"),
            "--output", str(tmp_path / "rd.json"), "--results-dir", str(tmp_path / "results")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. torch's "NumPy array is not writable"
        res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "BD-rate against JPEG" in res.output and "the curve at that bpp" in res.output
    assert "evaluating" in res.output and "8/8" in res.output  # 2 images x (sweep + 3 codecs)
    out = json.loads((tmp_path / "rd.json").read_text())
    names = [c["name"] for c in out["curves"]]
    assert names[-3:] == ["JPEG (Pillow)", "WebP (Pillow)", "AVIF (Pillow)"] and str(paths[2]) in names
    ours = out["curves"][0]["results"]
    assert len(ours["bpp"]) == 2 and ours["bpp"] == sorted(ours["bpp"]) and len(ours["psnr"]) == 2
    assert all(0 < v <= 1 for v in ours["ms-ssim"])  # 192-px images: 5 MS-SSIM scales fit
    assert set(out["bd_rate_percent"]) == {"JPEG", "WebP", "AVIF"}
    assert np.isfinite(out["mean"][str(paths[0])]["codec_psnr"])
    assert [p["image"] for p in out["points"][str(paths[0])]] == sorted(p.stem for p in kodak.iterdir())
    assert Image.open(tmp_path / "rd.png").format == "PNG"
    # CompressAI's own plotting tool reads the results files, for both metrics
    from compressai.utils.plot.__main__ import parse_json_file

    files = sorted((tmp_path / "results").glob("*.json"))
    assert len(files) == len(out["curves"])
    for f in files:
        for metric in ("psnr", "ms-ssim"):
            parsed = parse_json_file(f, metric)
            assert len(parsed["xs"]) == len(parsed["ys"]) > 0


def test_train_codec_on_any_source_streams_crops_with_workers(tmp_path, photo_tree):
    """--source: crops of a class-per-folder tree, decoded and cropped by 2 DataLoader workers."""
    from pipeline.codec import checkpoint

    out = tmp_path / "c.pt"
    res = runner.invoke(app, ["train-codec", str(out), "--codec-arch", "bmshj2018-hyperprior", "--N", "8",
                              "--M", "8", "--steps", "3", "--batch-size", "2", "--patch", "64",
                              "--threads", "1", "--source", str(photo_tree), "--workers", "2"])
    assert res.exit_code == 0, res.output
    ck = checkpoint.read(str(out))
    assert ck.metadata["train_source"] == str(photo_tree) and "train_photos" not in ck.metadata
    assert "--source" in ck.metadata["command"] and checkpoint.has_cdf_tables(ck.state_dict)


def test_source_crops_cover_the_source_and_are_seeded(photo_tree):
    from pipeline.codec_train.crops import SourceCrops

    def first(n, seed):
        it = iter(SourceCrops(str(photo_tree), 64, seed=seed, crops_per_image=1))
        return [next(it) for _ in range(n)]

    a, b, c = first(8, 0), first(8, 0), first(8, 1)
    assert all(x.shape == (3, 64, 64) and 0 <= float(x.min()) <= float(x.max()) <= 1 for x in a)
    assert all(bool((x == y).all()) for x, y in zip(a, b, strict=True))  # same seed, same crops
    assert not all(bool((x == y).all()) for x, y in zip(a, c, strict=True))
    assert len({float(x.sum()) for x in a}) == 8  # one crop from each of the 8 photos


def test_eval_utility_writes_the_table_and_plot(tmp_path):
    """A tiny Table 1: two rate points of one codec family and one of another, JPEG at each
    matched rate, the original pixels; 2 seeds of 1 epoch."""
    from pipeline.codec import checkpoint
    from pipeline.tasks.classification import PhotoTask, make_photo_task
    from tests.conftest import tiny_checkpoint

    make_photo_task(tmp_path / "task", PhotoTask(train_per_class=2, val_per_class=1, size=64))
    cks = []
    for i in range(3):
        cks.append(tmp_path / f"c{i}.pt")
        checkpoint.save(tiny_checkpoint("bmshj2018-hyperprior", seed=i), str(cks[-1]))
    args = ["eval", "utility", "--source", str(tmp_path / "task"), "--codec", f"rd={cks[0]}",
            "--codec", f"rd={cks[1]}", "--codec", f"task={cks[2]}", "--work", str(tmp_path / "work"),
            "--seeds", "2", "--epochs", "1", "--batch-size", "8", "--window", "2", "--workers", "0",
            "--cost-batch", "2", "--plot", str(tmp_path / "u.png"), "--output", str(tmp_path / "u.json")]
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "u.json").read_text())
    methods = [r["method"] for r in out["rows"]]
    # JPEG is matched to the first codec's rates (--jpeg-match: another, or all)
    assert methods == ["rd ŷ", "JPEG pixels"] * 2 + ["task ŷ", "original pixels"]
    for latent, jpeg in zip(out["rows"][0:4:2], out["rows"][1:4:2], strict=True):
        # JPEG re-encoded for that rate (on 64-px crops its headers alone exceed the codec's rate:
        # the row keeps both figures, the rate asked for and the one JPEG could reach)
        assert jpeg["target_bpp"] == latent["bpp"] and jpeg["bpp"] > 0
    assert all(len(r["top1"]) == 2 and 0 <= r["top1_mean"] <= 1 for r in out["rows"])
    # the same runs at equal training time: seed by seed the quickest row's budget, the
    # quickest row keeping its final figure
    budgets = [min(r["seconds"][s] for r in out["rows"]) for s in range(2)]
    assert [r["method"] for r in out["equal_time"]] == methods and "equal training time" in res.output
    assert all(r["budget_s"] == budgets for r in out["equal_time"])
    for s in range(2):
        quickest = min(range(len(methods)), key=lambda i: out["rows"][i]["seconds"][s])
        assert out["equal_time"][quickest]["values"][s] == out["rows"][quickest]["top1"][s]
    assert out["step_cost"]["batch"] == 2 and "224-px" in res.output and "cResNet-18" in res.output
    assert "original pixels" in res.output and Image.open(tmp_path / "u.png").format == "PNG"
    # again into the same --work: every finished run is read back, not trained again
    logs = sorted((tmp_path / "work" / "runs").glob("*/metrics.jsonl"))
    before = [p.read_text() for p in logs]
    res = runner.invoke(app, args[:-2] + ["--output", str(tmp_path / "again.json")], terminal_width=200)
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "again.json").read_text())
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in out["rows"]]
    assert [p.read_text() for p in logs] == before and len(logs) == 12


def test_source_crops_with_more_workers_than_images_and_unreadable_ones(tmp_path):
    """A worker with no share stops instead of spinning; a share of unreadable images is a
    clear SourceError, not a silent hang."""
    import numpy as np
    import torch

    from pipeline.codec_train.crops import SourceCrops
    from pipeline.errors import SourceError

    (tmp_path / "one" / "c").mkdir(parents=True)
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(tmp_path / "one" / "c" / "a.png")
    ds = SourceCrops(str(tmp_path / "one"), 64, crops_per_image=1)
    batches = iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    assert next(batches).shape == (2, 3, 64, 64)  # worker 1 has nothing and simply stops
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(SourceError, match="could be read"):
        next(iter(SourceCrops(str(tmp_path / "bad"), 64)))
