"""URI lists are planned by streaming them: list order, several files, bounded memory."""

from __future__ import annotations

import hashlib
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.sources.uris as uris_mod
from pipeline.convert import ConvertJob, ConvertOptions, UriListPlan, convert_dataset
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify
from pipeline.sources.uris import UriList


def _write_lists(folder, rows: list[dict], parts: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(rows) // parts)
    for i in range(parts):
        chunk = rows[i * step : (i + 1) * step]
        pq.write_table(pa.Table.from_pylist(chunk), folder / f"part-{i:03d}.parquet", row_group_size=3)
    return str(folder)


def _rows(photo_tree) -> list[dict]:
    """Interleaved splits, a file name in two folders, the same URI twice, a missing file."""
    files = sorted(photo_tree.rglob("*.jpg"))
    rows = [{"uri": str(f), "label": f.parent.name, "split": "val" if i % 3 == 2 else "train"}
            for i, f in enumerate(files)]
    twin = photo_tree / "twin" / files[0].name
    twin.parent.mkdir()
    twin.write_bytes(files[0].read_bytes())
    rows += [{"uri": str(twin), "label": "even", "split": "train"},
             {"uri": str(files[1]), "label": "odd", "split": "train"},
             {"uri": str(photo_tree / "gone.jpg"), "label": "even", "split": "val"}]
    return rows


def test_streamed_plan_follows_the_list_across_files(photo_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(uris_mod, "BATCH_ROWS", 2)  # many record batches per file
    rows = _rows(photo_tree)
    src = _write_lists(tmp_path / "list", rows, parts=3)
    plan = UriListPlan(UriList.scan(src), shard_size=3)
    tasks = list(plan.tasks({r.name for r in plan.records}))
    by_name = {t.name: t for t in tasks}
    assert [r.name for r in plan.records] == ["train-000000", "train-000001", "train-000002", "val-000000"]
    for r in plan.records:  # the records are the tasks' counts and key hashes
        t = by_name[r.name]
        assert r.entries == len(t.entries)
        assert r.keys_sha256 == hashlib.sha256("\n".join(e.key for e in t.entries).encode()).hexdigest()
    # per split, shards are consecutive rows in list order
    for split in ("train", "val"):
        listed = [r["uri"] for r in rows if r["split"] == split]
        ordered = sorted((t for t in tasks if t.split == split), key=lambda t: t.number)
        planned = [e.uri for t in ordered for e in t.entries]
        assert planned == listed
    keys = [e.key for t in tasks for e in t.entries]
    assert len(keys) == len(set(keys)) == len(rows)
    name = sorted(photo_tree.rglob("*.jpg"))[0].stem
    assert sum(k.startswith(f"{name}-") for k in keys) == 2  # both rows of the shared name get a hash
    assert plan.classes == ("even", "odd")


def test_one_file_or_three_convert_to_the_same_dataset(photo_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(uris_mod, "BATCH_ROWS", 2)
    rows = _rows(photo_tree)
    one = _write_lists(tmp_path / "one", rows, parts=1)
    three = _write_lists(tmp_path / "three", rows, parts=3)
    opts = ConvertOptions(shard_size=3)
    a = convert_dataset(ConvertJob(one, str(tmp_path / "a"), options=opts)).manifest
    b = convert_dataset(ConvertJob(three, str(tmp_path / "b"), options=opts)).manifest
    assert a.shards == b.shards and a.totals.samples == len(rows) - 1
    assert a.totals.failures_by_reason == {"missing": 1}
    assert verify(str(tmp_path / "b")).ok
    ds = LatentDataset.open(str(tmp_path / "b"))
    assert set(ds.manifest.splits) == {"train", "val"}


@pytest.mark.slow  # 200 000 rows under tracemalloc: about 20 s here
def test_planning_memory_does_not_grow_with_the_list(tmp_path):
    """200 000 rows: the plan keeps records and 8-byte key hashes, never the entries."""
    n = 200_000
    table = pa.table({"uri": [f"s3://bucket/images/{i:07d}.jpg" for i in range(n)],
                      "label": [i % 1000 for i in range(n)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=50_000)
    del table
    tracemalloc.start()
    try:
        plan = UriListPlan(UriList.scan(str(tmp_path / "big.parquet")), shard_size=1000)
        shards = sum(1 for _ in plan.tasks({r.name for r in plan.records}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shards == len(plan.records) == 200
    # one record batch of SourceItems (~65 k) dominates; 200 000 of them would be ~5x this
    assert peak < 60 * 2**20, f"planning peaked at {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("content", ["path\nx.jpg\n", ""])
def test_a_list_without_uris_is_a_clear_error(tmp_path, content):
    from pipeline.errors import SourceError

    (tmp_path / "l.csv").write_text(content or "uri\n")
    if content:
        with pytest.raises(SourceError, match="no 'uri' column"):
            UriList.scan(str(tmp_path / "l.csv"))
    else:
        with pytest.raises(SourceError, match="no image found"):
            convert_dataset(ConvertJob(str(tmp_path / "l.csv"), str(tmp_path / "out")))


def test_a_split_that_could_climb_out_of_out_is_refused(tmp_path):
    from pipeline.errors import SourceError

    (tmp_path / "l.csv").write_text("uri,split\n/x/a.jpg,../../etc\n")
    with pytest.raises(SourceError, match="split '../../etc' cannot name a shard"):
        UriList.scan(str(tmp_path / "l.csv"))
