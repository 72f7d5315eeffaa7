"""`latents train classify --resume` from the command line (the loop itself: tests/train)."""

import torch
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from tests.loader.conftest import photo_folder


def test_train_classify_resume_from_the_command_line(tmp_path):
    """The CLI: --resume of a finished run says where it resumed and trains nothing more;
    other options are one line and exit 2."""
    for split in ("train", "val"):
        photo_folder(tmp_path / "src" / split, n=6)
    convert_dataset(ConvertJob(str(tmp_path / "src"), str(tmp_path / "ds"),
                               options=ConvertOptions(shard_size=3)))
    args = ["train", "classify", "--data", str(tmp_path / "ds"), "--epochs", "1", "--batch-size", "2",
            "--window", "4", "--workers", "0", "--out", str(tmp_path / "run"), "--checkpoint-every", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 3)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0 and "resuming from" in res.output, res.output
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # nothing was left to train
    res = CliRunner().invoke(app, [*args, "--resume", "--lr", "0.5"])
    assert res.exit_code == 2 and "other lr" in res.output and "Traceback" not in res.output
