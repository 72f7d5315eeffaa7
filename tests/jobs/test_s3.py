"""SRC and OUT in S3 buckets on a real S3 endpoint (moto's server on 127.0.0.1, via s3fs)."""

import pandas as pd

from jobs.convert_cli import run_convert
from pipeline.convert import ConvertJob, ConvertOptions
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify
from tests.conftest import upload_tree
from tests.sources.fixtures import make_imagenet


def test_convert_from_s3_to_s3_and_verify(s3, photo_tree):
    s3.mkdir("src-a")
    s3.mkdir("out-a")
    upload_tree(s3, photo_tree, "src-a/photos")
    job = ConvertJob("s3://src-a/photos", "s3://out-a/ds", options=ConvertOptions(shard_size=3))
    m = run_convert(job, "local").manifest.raw
    assert m["totals"]["samples"] == 8 and m["source"]["uri"] == "s3://src-a/photos"
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls("out-a/ds/shards")) == sorted(
        [f"train-{i:06d}.{e}" for i in range(3) for e in ("tar", "parquet")])
    rep = verify("s3://out-a/ds")
    assert rep.ok and rep.decoded == 8
    ds = LatentDataset.open("s3://out-a/ds")
    key = ds.index.column("key")[0].as_py()
    assert ds.load_codec().decode_y(ds.latent_bytes(key)).shape[0] == m["codec"]["M"]
    # resume from S3: nothing to do, nothing changes
    before = {p: s3.cat_file(p) for p in s3.find("out-a/ds") if "/logs/" not in p}
    again = run_convert(job, "local")
    assert again.converted == 0 and again.skipped == 3
    assert {p: s3.cat_file(p) for p in s3.find("out-a/ds") if "/logs/" not in p} == before


def test_imagenet_layout_in_s3_accounts_for_every_input(s3, tmp_path):
    make_imagenet(tmp_path / "in")
    s3.mkdir("src-b")
    upload_tree(s3, tmp_path / "in", "src-b/ilsvrc")
    run_convert(ConvertJob("s3://src-b/ilsvrc", str(tmp_path / "out"), options=ConvertOptions(shard_size=4)),
                "local")
    index = pd.read_parquet(tmp_path / "out" / "index.parquet")
    failures = pd.read_parquet(tmp_path / "out" / "failures.parquet")
    assert len(index) == 9 and len(failures) == 1
    assert index["source_uri"].str.startswith("s3://src-b/ilsvrc/").all()
