"""Cheap resume: a finished dataset on S3 (moto's server) is resumed from index footers alone."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from PIL import Image
from s3fs import S3FileSystem

from pipeline.codec.load import CodecSpec
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.convert.resume import finished_shards, shard_result
from pipeline.images import ImagePolicy
from pipeline.shards import index as idx
from pipeline.shards.layout import Layout
from pipeline.shards.verify import verify


class CountingS3(S3FileSystem):
    """s3fs, counting every byte it GETs (whole objects, ranges and file reads alike)."""

    protocol = ("counts3",)
    read_bytes = 0

    async def _cat_file(self, path, version_id=None, start=None, end=None):
        data = await super()._cat_file(path, version_id=version_id, start=start, end=end)
        CountingS3.read_bytes += len(data)
        return data

    def _open(self, path, mode="rb", **kw):
        f = super()._open(path, mode, **kw)
        if "r" in mode:
            fetch = f._fetch_range

            def counted(start, end):
                data = fetch(start, end)
                CountingS3.read_bytes += len(data)
                return data

            f._fetch_range = f.cache.fetcher = counted  # the read cache holds its own reference
        return f


@pytest.fixture()
def counting_s3(s3):
    endpoint = fsspec.config.conf["s3"]["endpoint_url"]
    fsspec.register_implementation("counts3", CountingS3, clobber=True)
    fsspec.config.conf["counts3"] = {"endpoint_url": endpoint, "skip_instance_cache": True}
    CountingS3.read_bytes = 0
    yield CountingS3
    fsspec.config.conf.pop("counts3", None)


def _busy_tree(root, n: int, side: int):
    """Images of random 4-px blocks: dense detail, so shards of a few MB from a few images
    (a 1000-image ImageNet shard is ~10 MB)."""
    rng = np.random.default_rng(0)
    (root / "c").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        blocks = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)
        Image.fromarray(np.kron(blocks, np.ones((4, 4, 1), np.uint8))).save(root / "c" / f"n{i}.png")
    return root


@pytest.mark.slow  # about 20 s here
def test_resuming_a_finished_dataset_on_s3_reads_under_one_percent(counting_s3, s3, tmp_path):
    s3.mkdir("resume")
    job = ConvertJob(str(_busy_tree(tmp_path / "src", 8, 1536)), "counts3://resume/ds",
                     codec=CodecSpec(checkpoint="bundled:high-rate"),
                     options=ConvertOptions(ImagePolicy(size=0), shard_size=4))
    first = convert_dataset(job)
    shard_bytes = sum(s.tar_bytes for s in first.manifest.shards)
    assert first.converted == 2 and shard_bytes > 3_000_000
    before = {p: s3.cat_file(p) for p in s3.find("resume/ds") if "/logs/" not in p}

    counting_s3.read_bytes = 0
    again = convert_dataset(job)
    assert again.converted == 0 and again.skipped == 2 and again.manifest == first.manifest
    print(f"resume read {counting_s3.read_bytes} B of {shard_bytes} shard bytes")
    assert counting_s3.read_bytes < 0.01 * shard_bytes, (counting_s3.read_bytes, shard_bytes)
    assert {p: s3.cat_file(p) for p in s3.find("resume/ds") if "/logs/" not in p} == before


def test_footer_figures_are_the_manifest_entries(photo_tree, tmp_path):
    out = tmp_path / "out"
    job = ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=3))
    m = convert_dataset(job).manifest.raw
    layout = Layout.at(str(out))
    assert finished_shards(layout) == {s["name"] for s in m["shards"]}
    for s in m["shards"]:
        figures = idx.footer_metadata(layout.shard_index(s["name"]))[idx.SHARD_FIGURES]
        assert figures == s
        rows = idx.read_table(layout.shard_index(s["name"]))
        assert idx.rows_sha256(rows) == s["rows_sha256"] and rows.schema.metadata is None


def test_a_lying_footer_is_caught_by_verify(photo_tree, tmp_path):
    """The footer drives resume; its rows hash is pinned by the manifest, so edited rows show."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    path = out / "shards" / "train-000000.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["label"] = 1 - rows[0]["label"]
    pq.write_table(idx.to_table([idx.IndexRow(**r) for r in rows]).replace_schema_metadata(
        table.schema.metadata), path)
    rep = verify(str(out))
    assert any("rows differ" in f.problem for f in rep.faults), rep.faults


def test_an_unreadable_finished_index_names_the_fix(photo_tree, tmp_path):
    from pipeline.convert.plan import ShardTask
    from pipeline.errors import DatasetError

    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    (out / "shards" / "train-000001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="train-000001.parquet is unreadable.*delete it"):
        shard_result(Layout.at(str(out)), ShardTask("train", 1, ()))
