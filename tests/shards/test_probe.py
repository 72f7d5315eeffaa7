"""Issue #18's probe: a tar that is cut, longer than its manifest says, or holds members that
are no sample file is named by `verify` and by the loader — a `DatasetError` in strict mode,
a warning and a skip otherwise — with messages that name the shard and the member, never an
object's or a tuple's repr.

As in `test_hostile.py`, each case makes the manifest's checksums agree with the tampered
tar, as an attacker would, unless the case is the disagreement itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tracemalloc

import pytest

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import DatasetError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.shards.tar import ShardFault, TarBuilder, TarStream, tar_members
from pipeline.shards.verify import verify
from tests.conftest import upload_tree
from tests.faults import odd_member

SHARD = "train-000001"


@pytest.fixture()
def dataset(photo_tree, tmp_path):
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    return out


def _tar(out, name: str = SHARD):
    return out / "shards" / f"{name}.tar"


def _members(out, name: str = SHARD) -> list[tarfile.TarInfo]:
    return tarfile.open(fileobj=io.BytesIO(_tar(out, name).read_bytes())).getmembers()


def _replace(out, data: bytes, name: str = SHARD, tar_bytes: int | None = None) -> None:
    """Write ``data`` as shard ``name``; the manifest's sha256 agrees with it, and its
    ``tar_bytes`` too unless given."""
    _tar(out, name).write_bytes(data)
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    for s in m["shards"]:
        if s["name"] == name:
            s["tar_sha256"] = hashlib.sha256(data).hexdigest()
            s["tar_bytes"] = len(data) if tar_bytes is None else tar_bytes
    path.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _longer(out, name: str = "train-000000") -> int:
    """Append junk to shard ``name``: its sha256 agrees, its ``tar_bytes`` is the old length."""
    old = _tar(out, name).read_bytes()
    _replace(out, old + b"\xff" * 1000, name, tar_bytes=len(old))
    return len(old)


def _cut_in_header(out) -> str:
    """Cut shard 1 100 bytes into the header of its third sample's latent."""
    m = _members(out)[6]
    _replace(out, _tar(out).read_bytes()[: m.offset + 100])
    return m.name


def _cut_in_data(out) -> str:
    """Cut shard 1 1000 bytes into its third sample's latent data."""
    m = _members(out)[6]
    _replace(out, _tar(out).read_bytes()[: m.offset_data + 1000])
    return m.name


def _with_odd_member(out, kind: str) -> str:
    """Append a member that is no sample file to shard 1; returns its name."""
    info, data = odd_member(kind)
    _rebuild(out, extra=[(info, data)])
    return info.name


def _rebuild(out, extra=(), swap: dict[str, tarfile.TarInfo] | None = None) -> None:
    """Shard 1 rewritten with the members of ``swap`` (by name) replaced and ``extra`` appended."""
    src = tarfile.open(fileobj=io.BytesIO(_tar(out).read_bytes()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if swap and m.name in swap:
                dst.addfile(swap[m.name])
            else:
                dst.addfile(m, src.extractfile(m))
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    _replace(out, buf.getvalue())


def _load(out, strict: bool = False) -> list[int]:
    """Targets of every real sample the loader yields."""
    ds = LatentShardDataset(LatentLoaderConfig(str(out), train=False, window=None, strict=strict))
    return [t for _, t in ds if t != -1]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _assert_clean(msg: str, *names: str) -> None:
    """A message a person can act on: it names these, and holds no object or tuple repr."""
    for n in names:
        assert n in msg, msg
    assert "object at 0x" not in msg and not msg.startswith("(") and ", None)" not in msg, msg


# -- verify -------------------------------------------------------------------------------

def test_verify_names_a_tar_longer_than_its_manifest_says(dataset):
    n = _longer(dataset)
    rep = verify(str(dataset))
    assert {f.shard for f in rep.faults} == {"train-000000"}, rep.faults
    assert any(f"longer than the {n} bytes" in f.problem for f in rep.faults), rep.faults


def test_verify_names_a_tar_shorter_than_its_manifest_says(dataset):
    """The last 512 bytes of record padding cut off: tarfile still reads every member."""
    data = _tar(dataset).read_bytes()
    _replace(dataset, data[:-512], tar_bytes=len(data))
    rep = verify(str(dataset))
    assert {f.shard for f in rep.faults} == {SHARD}, rep.faults
    assert any(f"{len(data) - 512} bytes, the manifest gives {len(data)}" in f.problem
               for f in rep.faults), rep.faults


def test_verify_names_a_cut_inside_a_header(dataset):
    _cut_in_header(dataset)
    rep = verify(str(dataset))
    assert {f.shard for f in rep.faults} == {SHARD}, rep.faults
    assert any("inside a tar header" in f.problem for f in rep.faults), rep.faults


def test_verify_streams_each_tar_in_chunks(dataset):
    """A shard with a 48 MB member is hashed without holding it: Python's peak allocations
    stay far below the tar's size (the 4.8 MB codec checkpoint is read whole, as before)."""
    big = tarfile.TarInfo("odd_retina.pad")
    big.size = 48 * 2**20
    _rebuild(dataset, extra=[(big, bytes(big.size))])
    tracemalloc.start()
    try:
        rep = verify(str(dataset))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep.ok, rep.faults
    assert peak < 24 * 2**20, f"verify held {peak / 2**20:.1f} MiB at its peak"


def test_verify_streams_from_s3_and_names_a_longer_tar(s3, dataset):
    n = _longer(dataset)
    s3.mkdir("probe-verify")
    upload_tree(s3, dataset, "probe-verify/ds")
    rep = verify("s3://probe-verify/ds")
    assert rep.decoded == 8 and {f.shard for f in rep.faults} == {"train-000000"}, rep.faults
    assert any(f"longer than the {n} bytes" in f.problem for f in rep.faults), rep.faults


# -- the loader ---------------------------------------------------------------------------

def test_a_longer_tar_loses_no_sample_and_strict_names_it(dataset, caplog):
    _longer(dataset)
    with caplog.at_level(logging.WARNING):
        assert len(_load(dataset)) == 8
    (msg,) = _warnings(caplog)
    _assert_clean(msg, "train-000000", "longer than")
    with pytest.raises(DatasetError, match="train-000000.*longer than") as exc:
        _load(dataset, strict=True)
    _assert_clean(str(exc.value), "train-000000")


def test_a_cut_inside_a_header_is_an_error_in_strict_mode(dataset, caplog):
    _cut_in_header(dataset)
    with caplog.at_level(logging.WARNING):
        assert len(_load(dataset)) == 6  # the shard's first two samples are whole
    assert any("inside a tar header" in m for m in _warnings(caplog)), _warnings(caplog)
    for m in _warnings(caplog):
        _assert_clean(m)
    with pytest.raises(DatasetError, match="inside a tar header") as exc:
        _load(dataset, strict=True)
    _assert_clean(str(exc.value), SHARD)


def test_a_cut_inside_member_data_is_an_error_in_strict_mode(dataset, caplog):
    member = _cut_in_data(dataset)
    with caplog.at_level(logging.WARNING):
        assert len(_load(dataset)) == 6
    assert any(member in m and SHARD in m for m in _warnings(caplog)), _warnings(caplog)
    for m in _warnings(caplog):
        _assert_clean(m)
    with pytest.raises(DatasetError) as exc:
        _load(dataset, strict=True)
    _assert_clean(str(exc.value), SHARD, member)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "dotdot", "absolute", "folder"])
def test_odd_members_are_warned_about_and_an_error_in_strict_mode(dataset, kind, caplog):
    name = _with_odd_member(dataset, kind)
    with caplog.at_level(logging.WARNING):
        assert len(_load(dataset)) == 8
    (msg,) = _warnings(caplog)
    _assert_clean(msg, SHARD, name)
    with pytest.raises(DatasetError) as exc:
        _load(dataset, strict=True)
    _assert_clean(str(exc.value), SHARD, name)


def test_a_latent_swapped_for_a_symlink_is_named_by_member(dataset, caplog):
    name = _members(dataset)[3].name
    link = tarfile.TarInfo(name)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _rebuild(dataset, swap={name: link})
    with caplog.at_level(logging.WARNING):
        assert len(_load(dataset)) == 7
    faults = [m for m in _warnings(caplog) if "sample(s) skipped" not in m]  # not the epoch's count
    assert len(faults) == 2, faults  # the link, then the sample left without its latent
    for m in faults:
        _assert_clean(m, SHARD, name)
    with pytest.raises(DatasetError) as exc:
        _load(dataset, strict=True)
    _assert_clean(str(exc.value), SHARD, name)


# -- the reader itself ----------------------------------------------------------------------

def _walk(data: bytes, tar_bytes: int | None = None, where: str = "x.tar"):
    faults: list[ShardFault] = []
    got = [(m.name, d) for m, d in tar_members(TarStream(io.BytesIO(data), tar_bytes or len(data)),
                                               where, faults.append)]
    return got, faults


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_member_names_are_read_whole(fmt):
    """Keys over 100 characters go into PAX (the converter's format) or GNU long-name headers."""
    name = "k" * 180 + ".latent"
    if fmt == tarfile.PAX_FORMAT:
        tb = TarBuilder()
        tb.add(name, b"abc")
        data = tb.finish()
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        data = buf.getvalue()
    assert _walk(data) == ([(name, b"abc")], [])


def test_a_damaged_header_mid_tar_ends_the_shard_with_its_offset():
    tb = TarBuilder()
    tb.add("a.latent", b"a" * 600)
    m = tb.add("b.latent", b"b")
    data = bytearray(tb.finish())
    data[m.offset - 512 + 150] ^= 0xFF  # inside b's header, its checksum no longer agrees
    got, faults = _walk(bytes(data))
    assert got == [("a.latent", b"a" * 600)]
    assert [f.problem.split(" (")[0] for f in faults] == [
        f"the 512 bytes at byte {m.offset - 512} are not a tar header"]


def test_fault_messages_lose_url_credentials():
    tb = TarBuilder()
    tb.add("a.latent", b"a")
    data = tb.finish()
    _, (fault,) = _walk(data + b"x", len(data), "s3://bucket/ds/shards/train-000000.tar?X-Amz-Signature=abc")
    assert str(fault).startswith("s3://bucket/ds/shards/train-000000.tar?X-Amz-Signature=***: the tar is "
                                 "longer than"), fault
