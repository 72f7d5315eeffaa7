"""A finished conversion leaves nothing running behind it, so `latents convert` exits 0.

Issue #18: about 4 in 55 short conversions printed their summary, left a dataset that
verifies, then aborted at exit (134, "terminate called without an active exception"). Indices
were read with `pq.read_table`, whose dataset scanner leaves an Arrow pool thread to drop the
file it read (a Python object) after the call returns; during interpreter shutdown that thread
cannot take the GIL, and the C++ runtime aborts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.shards import index as idx
from pipeline.shards.dataset import LatentDataset
from tests.trees import write_photo_tree


def test_reading_an_index_leaves_nothing_for_arrow_threads_to_release():
    """When `table_from_bytes` returns, nothing holds the caller's bytes any more (read with
    `pq.read_table`, an Arrow pool thread still did, in some of the reads: hence many reads)."""
    rows = [idx.IndexRow(key=f"k{i}", split="train", shard="train-000000", status=idx.OK,
                         source_uri=f"/src/{i}.jpg", bpp=0.5) for i in range(12)]
    data = idx.table_bytes(idx.to_table(rows), {idx.SHARD_FIGURES: {"name": "train-000000"}})
    refs = sys.getrefcount(data)
    late = 0
    for _ in range(300):
        assert idx.table_from_bytes(data).num_rows == 12
        late += sys.getrefcount(data) != refs
    assert late == 0, f"{late} of 300 reads left the index bytes to another thread"


def test_convert_and_resume_leave_no_thread_behind(photo_tree, tmp_path):
    """The lease heartbeat and the image-reading pool are joined before the library returns."""
    before = set(threading.enumerate())
    job = ConvertJob(str(photo_tree), str(tmp_path / "out"), options=ConvertOptions(shard_size=4))
    assert convert_dataset(job).converted == 2
    assert convert_dataset(job).skipped == 2  # the resume: footers read, indices merged again
    ds = LatentDataset.open(job.out)
    assert ds.index.num_rows == 8 and ds.failures.num_rows == 0
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads still running after convert: {left}"


@pytest.fixture()
def twelve_photos(tmp_path):
    """The 12-image class-per-folder tree of the issue's reproduction."""
    return write_photo_tree(tmp_path / "photos", 12)


@pytest.mark.slow
def test_200_short_conversions_in_a_row_exit_0(twelve_photos, tmp_path):
    """The issue's loop: `latents convert SRC OUT --executor local` into a fresh OUT, 200 times
    (the abort came in about 7 % of runs; about 10 s a run on 2 cores)."""
    t0 = time.perf_counter()
    for i in range(200):
        out = tmp_path / f"out-{i}"
        res = subprocess.run([sys.executable, "-m", "jobs.cli", "convert", str(twelve_photos), str(out),
                              "--executor", "local"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"run {i + 1} exited {res.returncode}: {res.stderr[-2000:]}"
        assert "terminate called" not in res.stderr
        if i:
            shutil.rmtree(out)
    assert LatentDataset.open(str(tmp_path / "out-0")).index.num_rows == 12
    print(f"200 conversions in {time.perf_counter() - t0:.0f} s")
