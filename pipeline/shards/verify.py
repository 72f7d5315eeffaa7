"""Check a latent dataset against its manifest: shard checksums, codec identity, every latent."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.errors import LatentShardsError
from pipeline.shards import index as idx
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.layout import read_file


@dataclass(frozen=True)
class Fault:
    shard: str
    key: str
    problem: str


@dataclass
class VerifyReport:
    shards: int = 0
    decoded: int = 0
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults


def _members(tar_bytes: bytes) -> tuple[dict[str, tuple[int, bytes]], list[str]]:
    """Regular members by name (data offset, bytes), and what is wrong with any other member:
    links, devices, folders, names that climb (``..``) or start at ``/``."""
    out, problems = {}, []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        for m in tf.getmembers():
            if "/" in m.name or m.name == "..":
                problems.append(f"member {m.name!r} has a path, not a sample file name")
            elif not m.isreg():
                kind = "a symlink" if m.issym() else "a hard link" if m.islnk() else f"of type {m.type!r}"
                problems.append(f"member {m.name!r} is {kind}, not a regular file")
            elif m.name in out:
                problems.append(f"member {m.name!r} appears twice")
            elif m.offset_data + m.size > len(tar_bytes):
                problems.append(f"member {m.name!r} claims {m.size} bytes past the tar's end")
            else:
                out[m.name] = (m.offset_data, tar_bytes[m.offset_data : m.offset_data + m.size])
    return out, problems


def verify(root: str, sample: int | None = None, seed: int = 0,
           on_shard: Callable[[str], None] | None = None) -> VerifyReport:
    """Every fault found, named by shard and key; ``sample`` decodes only that many latents."""
    ds = LatentDataset.open(root)
    rep = VerifyReport()
    codec = None
    try:
        ck = read_file(ds.layout.codec_checkpoint)
        want = ds.manifest["codec_checkpoint"]["sha256"]
        if hashlib.sha256(ck).hexdigest() != want:
            rep.faults.append(
                Fault("codec", "", f"codec/codec.pt sha256 differs from manifest ({want[:16]}…)"))
        codec = ds.load_codec()
    except (LatentShardsError, OSError) as exc:
        rep.faults.append(Fault("codec", "", str(exc)))
    shards = ds.manifest["shards"]
    rows_by_shard, all_keys, tables = {}, [], []
    for s in shards:
        rows = []
        try:
            raw = read_file(ds.layout.shard_index(s["name"]))
            table = idx.table_from_bytes(raw)
            if "rows_sha256" in s:
                if idx.rows_sha256(table) != s["rows_sha256"]:
                    rep.faults.append(Fault(s["name"], "", "shard index rows differ from the manifest"))
            elif hashlib.sha256(raw).hexdigest() != s["index_sha256"]:  # datasets before the footer figures
                rep.faults.append(Fault(s["name"], "", "shard index sha256 differs from the manifest"))
            tables.append(table)
            rows = [r for r in table.to_pylist() if r["status"] == idx.OK]
        except Exception as exc:  # noqa: BLE001 - any unreadable index is a fault, not a crash
            rep.faults.append(Fault(s["name"], "", f"shard index unreadable: {exc}"))
        if len(rows) != s["samples"]:
            rep.faults.append(Fault(s["name"], "", f"index holds {len(rows)} samples, "
                                    f"manifest says {s['samples']}"))
        rows_by_shard[s["name"]] = rows
        all_keys += [(s["name"], r["key"]) for r in rows]
    _check_merged(rep, ds, tables)
    chosen = set(all_keys) if sample is None else set(
        random.Random(seed).sample(all_keys, min(sample, len(all_keys))))
    for s in shards:
        name = s["name"]
        rep.shards += 1
        try:
            data = read_file(ds.layout.shard_tar(name))
        except OSError as exc:
            rep.faults.append(Fault(name, "", f"tar unreadable: {exc}"))
            continue
        if hashlib.sha256(data).hexdigest() != s["tar_sha256"]:
            rep.faults.append(Fault(name, "", "tar sha256 differs from the manifest"))
        try:
            members, problems = _members(data)
        except tarfile.TarError as exc:
            rep.faults.append(Fault(name, "", f"not a readable tar: {exc}"))
            continue
        rep.faults += [Fault(name, "", p) for p in problems]
        _check_rows(rep, name, rows_by_shard[name], members, data, codec, chosen, ds.fingerprint)
        if on_shard:
            on_shard(name)
    return rep


def _check_merged(rep: VerifyReport, ds: LatentDataset, shard_tables: list) -> None:
    """index.parquet and failures.parquet hold exactly the per-shard indices' rows, merged
    (a retried key keeps its latest row): what `decode` and `inspect` read is what was checked."""
    import pyarrow.compute as pc

    table = idx.latest_rows(idx.concat(shard_tables))
    for part, url, status in (("index.parquet", ds.layout.index, idx.OK),
                              ("failures.parquet", ds.layout.failures, idx.FAILED)):
        want = table.filter(pc.equal(table["status"], status))
        try:
            got = idx.read_table(url)
        except FileNotFoundError:
            rep.faults.append(Fault(part, "", f"{part} is missing; rerun the same `latents convert` "
                                    "command to write it again"))
            continue
        except Exception as exc:  # noqa: BLE001 - an unreadable part is a fault, not a crash
            rep.faults.append(Fault(part, "", f"{part} unreadable: {exc}"))
            continue
        if got.num_rows != want.num_rows:
            rep.faults.append(Fault(part, "", f"{part} holds {got.num_rows} rows, the shard indices "
                                    f"{want.num_rows}"))
        elif idx.rows_sha256(got) != idx.rows_sha256(want):
            rep.faults.append(Fault(part, "", f"{part} differs from the shard indices it merges"))


def _points_at(data: bytes, members: dict, name: str, offset, size) -> bool:
    m = members.get(name)
    return m is not None and m[0] == offset and data[offset : offset + (size or 0)] == m[1]


def _check_rows(rep, name, rows, members, data, codec, chosen, fingerprint) -> None:
    if len(rows) != sum(1 for m in members if m.endswith(".latent")):
        rep.faults.append(Fault(name, "", f"index lists {len(rows)} samples, tar holds "
                                f"{sum(1 for m in members if m.endswith('.latent'))}"))
    for r in rows:
        key = r["key"]
        member = members.get(f"{key}.latent")
        if member is None:
            rep.faults.append(Fault(name, key, "latent member missing from tar"))
            continue
        blob = member[1]
        for ext, col in (("latent", "latent"), ("json", "json"), ("cls", "cls"), ("mask.png", "mask")):
            if r.get(f"{col}_offset") is not None and not _points_at(
                    data, members, f"{key}.{ext}", r[f"{col}_offset"], r[f"{col}_size"]):
                rep.faults.append(Fault(name, key, f"index offset/size do not point at {key}.{ext}"))
        if r["codec_fingerprint"] != fingerprint:
            rep.faults.append(Fault(name, key, "index row names another codec fingerprint"))
        if codec is None or (name, key) not in chosen:
            continue
        try:
            y = codec.decode_y(blob)
            if tuple(y.shape) != (r["latent_c"], r["valid_h"], r["valid_w"]):
                raise LatentShardsError(f"decoded shape {tuple(y.shape)} differs from the index")
            rep.decoded += 1
        except Exception as exc:  # noqa: BLE001 - every undecodable sample is a named fault
            rep.faults.append(Fault(name, key, f"latent does not decode: {exc}"))
