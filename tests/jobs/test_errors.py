"""Errors users can act on: every command answers bad input with one line and exit 2."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.errors import ConfigError, Reason, SourceError

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(res, *needles: str) -> str:
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(res.exception, AssertionError)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in out, out
    return out


def test_config_and_source_errors_share_the_hierarchy():
    assert issubclass(ConfigError, ValueError)
    assert {c.__name__ for c in ConfigError.__mro__} >= {"LatentShardsError", "ValueError"}
    assert "LatentShardsError" in {c.__name__ for c in SourceError.__mro__}


def test_batch_size_zero_names_the_option(photo_tree, tmp_path):
    res = CliRunner().invoke(app, ["convert", str(photo_tree), str(tmp_path / "o"), "--batch-size", "0",
                                   "--executor", "local", "--no-progress"])
    _one_line_error(res, "--batch-size must be a positive whole number, got 0")


def test_out_below_a_file_is_one_line(photo_tree, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    res = CliRunner().invoke(app, ["convert", str(photo_tree), str(tmp_path / "file" / "out"),
                                   "--executor", "local", "--no-progress"])
    _one_line_error(res, "file/out")


def test_disk_full_writing_the_codec_is_one_line(photo_tree, tmp_path, monkeypatch):
    from pipeline import storage

    real_open = open

    def full(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if "w" in mode and "codec.pt" in str(path):
            def write(_data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(storage, "open", full, raising=False)
    res = CliRunner().invoke(app, ["convert", str(photo_tree), str(tmp_path / "o"), "--executor", "local",
                                   "--no-progress"])
    _one_line_error(res, "no space left on the device writing", "codec.pt")


def test_credentials_in_a_source_url_never_reach_the_screen(tmp_path):
    url = "s3://AKIAEXAMPLEKEY:wJalrSuperSecret@no-such-bucket/photos"
    res = CliRunner().invoke(app, ["convert", url, str(tmp_path / "o"), "--executor", "local",
                                   "--no-progress"])
    out = _one_line_error(res, "s3://no-such-bucket/photos", "credentials do not go in a s3:// URL")
    assert "wJalrSuperSecret" not in out and "AKIAEXAMPLEKEY" not in out


def test_an_unexpected_error_is_one_line_without_its_secrets(tmp_path, monkeypatch):
    import pipeline.convert.driver as driver

    def boom(job):
        raise KeyError("while fetching https://user:hunter2@example.com/x.jpg?sig=abc")

    monkeypatch.setattr(driver, "make_plan", boom)
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "src"), str(tmp_path / "o"),
                                   "--executor", "local",
                                   "--no-progress"])
    out = _one_line_error(res, "KeyError", "https://example.com/x.jpg?sig=***", "LATENTS_DEBUG=1")
    assert "hunter2" not in out and "abc" not in out


def test_credentials_never_reach_the_manifest(photo_tree, tmp_path):
    """The recorded commands (the manifest's canonical one, the log's as typed) keep no
    password, token or signature."""
    import json

    from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset

    out = tmp_path / "o"
    command = ("latents", "convert", str(photo_tree), str(out), "--checkpoint",
               "https://user:hunter2@models.example.com/c.pt?X-Amz-Signature=deadbeef")
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=8),
                               command=command))
    text = (out / "manifest.json").read_text() + "".join(p.read_text() for p in (out / "logs").iterdir())
    assert "hunter2" not in text and "deadbeef" not in text
    log = json.loads(next((out / "logs").iterdir()).read_text())
    assert log["command"][-1] == "https://models.example.com/c.pt?X-Amz-Signature=***"


def test_redact_keeps_what_is_not_a_secret():
    from pipeline.errors import redact

    assert redact("/data/x y.jpg and s3://b/k.jpg") == "/data/x y.jpg and s3://b/k.jpg"
    assert redact("gs://u:p@b/k?token=t&alt=media") == "gs://b/k?token=***&alt=***"


@pytest.mark.parametrize("args, needle", [
    (["train-codec", "OUT.pt", "--patch", "100", "--steps", "1"], "--patch must be a multiple of 64"),
    (["train-codec", "OUT.pt", "--steps", "0"], "--steps must be positive"),
])
def test_train_codec_options_are_checked(tmp_path, args, needle):
    res = CliRunner().invoke(app, [a.replace("OUT.pt", str(tmp_path / "c.pt")) for a in args])
    _one_line_error(res, needle)


def test_make_task_into_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(app, ["make-task", str(tmp_path / "file" / "task")])
    _one_line_error(res)


def test_python_m_jobs_convert_answers_in_one_line_too(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "jobs.convert_cli", str(tmp_path / "nothing-here"),
                          str(tmp_path / "o"), "--executor", "local", "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "no image found" in res.stderr


def test_the_readme_lists_every_failure_reason():
    readme = (ROOT / "README.md").read_text()
    missing = [r.value for r in Reason if f"`{r.value}`" not in readme]
    assert not missing, f"README does not list: {missing}"
