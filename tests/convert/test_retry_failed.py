"""`convert --retry-failed`: transient read failures come back as new shards; nothing else moves."""

from __future__ import annotations

import contextlib

import fsspec
import pandas as pd
import pytest

import pipeline.convert.driver as driver
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify
from tests.faults import Crash


def _files(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root):]: fs.cat_file(p) for p in sorted(fs.find(root)) if "/logs/" not in p}


@pytest.fixture()
def flaky_src(photo_tree, flaky, tmp_path):
    """The photo tree in the flaky store, where every read of an ``odd/`` photo fails."""
    fs = fsspec.filesystem("flaky")
    base = f"/rf-{tmp_path.name}"
    for p in sorted(photo_tree.rglob("*.jpg")):
        fs.pipe_file(f"{base}/src/{p.parent.name}/{p.name}", p.read_bytes())
    flaky.fail_reading = "/odd/"
    return f"flaky://{base}/src", f"flaky://{base}/out"


def _job(src, out, retry=False):
    # key order: the flaky photos sit in known shards
    return ConvertJob(src, out, options=ConvertOptions(shard_size=3, batch_size=3, order="sorted"),
                      retry_failed=retry)


@contextlib.contextmanager
def _killed_at_shard(monkeypatch, number: int):
    """The process dies when the executor starts shard ``number`` (of any split)."""
    real = driver.convert_shard

    def dies(task, *a, **k):
        if task.number == number:
            raise Crash(f"killed at shard {task.name}")
        return real(task, *a, **k)

    monkeypatch.setattr(driver, "convert_shard", dies)
    try:
        yield
    finally:
        monkeypatch.setattr(driver, "convert_shard", real)


def _latents(out: str) -> dict[str, bytes]:
    ds = LatentDataset.open(out)
    return {k: ds.latent_bytes(k) for k in ds.index.column("key").to_pylist()}


def test_transient_failures_become_samples_in_new_shards(flaky_src, flaky, tmp_path, photo_tree):
    src, out = flaky_src
    first = convert_dataset(_job(src, out))
    assert (first.manifest.totals.samples, first.manifest.totals.failures) == (4, 4)
    assert first.failures_by_reason == {"read-error": 4}
    flaky.fail_reading = ""  # the store answers again
    s = convert_dataset(_job(src, out, retry=True))
    m = s.manifest.raw
    assert (s.retried, s.recovered, s.converted) == (4, 4, 2)
    assert [x["name"] for x in m["shards"]] == [f"train-{i:06d}" for i in range(5)]
    assert m["totals"]["samples"] == 8 and m["totals"]["failures"] == 0
    assert m["splits"]["train"] == {"samples": 8, "failures": 0, "shards": 5}
    rep = verify(out)
    assert rep.ok and rep.decoded == 8, rep.faults
    assert LatentDataset.open(out).failures.num_rows == 0
    # the recovered samples are the very latents an undisturbed conversion writes
    clean = str(tmp_path / "clean")
    convert_dataset(_job(str(photo_tree), clean))
    assert _latents(out) == _latents(clean)


def test_failing_again_keeps_one_ledger_row_per_input(flaky_src, flaky):
    src, out = flaky_src
    convert_dataset(_job(src, out))
    s = convert_dataset(_job(src, out, retry=True))  # still failing
    assert (s.retried, s.recovered) == (4, 0)
    m = s.manifest.raw
    assert len(m["shards"]) == 5 and m["totals"]["failures"] == 4 and m["splits"]["train"]["failures"] == 4
    ledger = LatentDataset.open(out).failures.to_pandas()
    assert sorted(ledger["shard"]) == ["train-000003", "train-000003", "train-000003", "train-000004"]
    assert ledger["key"].is_unique and verify(out).ok


def test_a_crash_mid_retry_is_finished_by_a_plain_rerun(flaky_src, flaky, monkeypatch):
    src, out = flaky_src
    convert_dataset(_job(src, out))
    flaky.fail_reading = ""
    with _killed_at_shard(monkeypatch, 4), pytest.raises(Crash):  # the round's second shard
        convert_dataset(_job(src, out, retry=True))
    # the first run's manifest, index and ledger still stand together: nothing half-merged
    assert verify(out).ok and LatentDataset.open(out).manifest.totals.samples == 4
    s = convert_dataset(_job(src, out))  # no --retry-failed: the recorded round is finished
    assert s.converted == 1 and s.manifest.totals.samples == 8
    assert verify(out).ok
    # and it is the same dataset, byte for byte, that an uninterrupted retry writes
    out2 = out.replace("/out", "/out2")
    flaky.fail_reading = "/odd/"
    convert_dataset(_job(src, out2))
    flaky.fail_reading = ""
    convert_dataset(_job(src, out2, retry=True))
    assert _files(out2) == _files(out)


def test_nothing_transient_to_retry_changes_nothing(photo_tree, tmp_path):
    from tests.sources.fixtures import make_uri_list

    lst = make_uri_list(tmp_path / "list", photo_tree)  # one listed file is missing: permanent
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(lst), str(out), options=ConvertOptions(shard_size=3)))
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and "logs" not in p.parts}
    s = convert_dataset(ConvertJob(str(lst), str(out), options=ConvertOptions(shard_size=3),
                                   retry_failed=True))
    assert (s.retried, s.converted) == (0, 0)
    assert pd.read_parquet(out / "failures.parquet")["reason"].tolist() == ["missing"]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and "logs" not in p.parts} == before


def test_retry_on_an_unfinished_dataset_finishes_it_then_retries(flaky_src, flaky, monkeypatch):
    src, out = flaky_src
    with _killed_at_shard(monkeypatch, 2), pytest.raises(Crash):
        convert_dataset(_job(src, out))
    flaky.fail_reading = ""
    s = convert_dataset(_job(src, out, retry=True))
    # shard 2 is finished (its photos read now), then shard 1's two failures are retried in shard 3
    assert (s.converted, s.skipped, s.retried, s.recovered) == (2, 2, 2, 2)
    assert [x.name for x in s.manifest.shards][-1] == "train-000003"
    assert (s.manifest.totals.samples, s.manifest.totals.failures) == (8, 0)
    assert verify(out).ok
