"""A latent dataset from elsewhere is untrusted: every hostile part is a clean error from
`verify`, the loader and `decode` — never a crash, a hang, or a read outside the dataset.

Each case keeps the manifest's checksums consistent with the tampered files (as an attacker
would), so only the structural checks can catch it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import DatasetError, LatentShardsError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.shards import index as idx
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify
from tests.faults import odd_member


@pytest.fixture()
def dataset(photo_tree, tmp_path):
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    return out


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _save_manifest(out, m: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _rewrite_tar(out, name: str, extra: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    """Append members to shard ``name`` and make the manifest agree with the new bytes."""
    path = out / "shards" / f"{name}.tar"
    src = tarfile.open(fileobj=io.BytesIO(path.read_bytes()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())
    m = _manifest(out)
    for s in m["shards"]:
        if s["name"] == name:
            s["tar_bytes"], s["tar_sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    _save_manifest(out, m)


def _loader_samples(out) -> list[int]:
    """Targets of every real sample the loader yields (placeholders, target -1, left out)."""
    ds = LatentShardDataset(LatentLoaderConfig(str(out), train=False, window=None))
    return [t for _, t in ds if t != -1]


def test_a_manifest_shard_outside_out_is_refused_everywhere(dataset, tmp_path):
    outside = tmp_path / "evil-000000.tar"
    outside.write_bytes((dataset / "shards" / "train-000000.tar").read_bytes())
    m = _manifest(dataset)
    m["shards"][0]["name"] = "../../evil-000000"
    _save_manifest(dataset, m)
    for run in (lambda: verify(str(dataset)), lambda: LatentDataset.open(str(dataset)),
                lambda: LatentShardDataset(LatentLoaderConfig(str(dataset)))):
        with pytest.raises(DatasetError, match="not a shard name.*outside its dataset"):
            run()


def test_an_index_row_pointing_at_another_member(dataset, tmp_path):
    """index.parquet claims sample A's latent sits where sample B's is: decode refuses,
    verify names index.parquet."""
    table = pq.read_table(dataset / "index.parquet")
    rows = table.to_pylist()
    rows[0]["latent_offset"], rows[0]["latent_size"] = rows[1]["latent_offset"], rows[1]["latent_size"]
    pq.write_table(idx.to_table([idx.IndexRow(**r) for r in rows]), dataset / "index.parquet")
    ds = LatentDataset.open(str(dataset))
    a, b = rows[0]["key"], rows[1]["key"]
    with pytest.raises(DatasetError, match=f"points at '{b}.latent'.*not at {a}.latent"):
        ds.latent_bytes(rows[0]["key"])
    rep = verify(str(dataset))
    assert [f.shard for f in rep.faults] == ["index.parquet"]
    assert "differs from the shard indices" in rep.faults[0].problem


@pytest.mark.parametrize("lie", ["size past the member", "size past the tar", "offset mid-block",
                                 "negative offset"])
def test_an_index_that_lies_about_offsets(dataset, lie):
    table = pq.read_table(dataset / "index.parquet")
    rows = table.to_pylist()
    r = rows[0]
    if lie == "size past the member":
        r["latent_size"] += 1
    elif lie == "size past the tar":
        r["latent_size"] = 10**12
    elif lie == "offset mid-block":
        r["latent_offset"] += 7
    else:
        r["latent_offset"] = -512
    pq.write_table(idx.to_table([idx.IndexRow(**x) for x in rows]), dataset / "index.parquet")
    with pytest.raises(DatasetError, match="index"):
        LatentDataset.open(str(dataset)).latent_bytes(r["key"])


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "dotdot", "absolute", "folder"])
def test_odd_tar_members_are_named_by_verify_and_skipped_by_the_loader(dataset, kind):
    info, data = odd_member(kind)
    _rewrite_tar(dataset, "train-000001", [(info, data)])
    rep = verify(str(dataset))
    assert [f.shard for f in rep.faults] == ["train-000001"], rep.faults
    assert info.name in rep.faults[0].problem
    assert len(_loader_samples(dataset)) == 8  # every real sample, the odd member ignored


def test_a_member_far_larger_than_its_tar(dataset):
    """A header claiming 1 GB in a tar of a few KB: verify names the shard, the loader drops
    what it cannot read and does not allocate the gigabyte."""
    path = dataset / "shards" / "train-000001.tar"
    data = bytearray(path.read_bytes())
    head = tarfile.TarInfo.frombuf(bytes(data[:512]), "utf-8", "surrogateescape")
    head.size = 2**30
    data[:512] = head.tobuf(tarfile.USTAR_FORMAT)
    path.write_bytes(bytes(data))
    m = _manifest(dataset)
    m["shards"][1]["tar_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    _save_manifest(dataset, m)
    rep = verify(str(dataset))
    assert rep.faults and {f.shard for f in rep.faults} == {"train-000001"}
    assert len(_loader_samples(dataset)) == 4  # shard 0 whole; shard 1 unreadable from its first member


def test_a_tar_longer_than_its_manifest_says_is_not_streamed_past_it(dataset):
    path = dataset / "shards" / "train-000000.tar"
    path.write_bytes(path.read_bytes() + b"\0" * 10 * 2**20)  # 10 MB more than the manifest's tar_bytes
    cfg = LatentLoaderConfig(str(dataset), train=False, window=None, strict=True)
    with pytest.raises(LatentShardsError, match="longer than the .* bytes its manifest gives"):
        list(LatentShardDataset(cfg))


def test_a_codec_checkpoint_that_is_not_one(dataset):
    (dataset / "codec" / "codec.pt").write_bytes(b"PK\x03\x04 not a checkpoint at all" * 40)
    rep = verify(str(dataset))
    assert [f.shard for f in rep.faults] == ["codec", "codec"]
    assert "not a readable torch checkpoint" in rep.faults[1].problem
    with pytest.raises(LatentShardsError, match="not a readable torch checkpoint"):
        _loader_samples(dataset)
