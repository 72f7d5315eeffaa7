"""Check a latent dataset against its manifest: shard checksums, codec identity, every latent."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.errors import LatentShardsError, redact
from pipeline.shards import index as idx
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.tar import open_tar, tar_members
from pipeline.storage import read_file


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


def verify(root: str, sample: int | None = None, seed: int = 0,
           on_shard: Callable[[str], None] | None = None) -> VerifyReport:
    """Every fault found, named by shard and key; ``sample`` decodes only that many latents."""
    ds = LatentDataset.open(root)
    rep = VerifyReport()
    codec = None
    try:
        ck = read_file(ds.layout.codec_checkpoint)
        want = ds.manifest.codec_checkpoint_sha256
        if hashlib.sha256(ck).hexdigest() != want:
            rep.faults.append(
                Fault("codec", "", f"codec/codec.pt sha256 differs from manifest ({want[:16]}…)"))
        codec = ds.load_codec()
    except (LatentShardsError, OSError) as exc:
        rep.faults.append(Fault("codec", "", str(exc)))
    shards = ds.manifest.shards
    rows_by_shard, all_keys, tables = {}, [], []
    for s in shards:
        rows = []
        try:
            raw = read_file(ds.layout.shard_index(s.name))
            table = idx.table_from_bytes(raw)
            if s.rows_sha256 is not None:
                if idx.rows_sha256(table) != s.rows_sha256:
                    rep.faults.append(Fault(s.name, "", "shard index rows differ from the manifest"))
            elif hashlib.sha256(raw).hexdigest() != s.index_sha256:  # datasets before the footer figures
                rep.faults.append(Fault(s.name, "", "shard index sha256 differs from the manifest"))
            tables.append(table)
            rows = [r for r in table.to_pylist() if r["status"] == idx.OK]
        except Exception as exc:  # noqa: BLE001 - any unreadable index is a fault, not a crash
            rep.faults.append(Fault(s.name, "", f"shard index unreadable: {exc}"))
        if len(rows) != s.samples:
            rep.faults.append(Fault(s.name, "", f"index holds {len(rows)} samples, "
                                    f"manifest says {s['samples']}"))
        rows_by_shard[s.name] = rows
        all_keys += [(s.name, r["key"]) for r in rows]
    _check_merged(rep, ds, tables)
    chosen = set(all_keys) if sample is None else set(
        random.Random(seed).sample(all_keys, min(sample, len(all_keys))))
    for s in shards:
        rep.shards += 1
        _check_tar(rep, ds, s, rows_by_shard[s.name], codec, chosen)
        if on_shard:
            on_shard(s.name)
    return rep


def _check_tar(rep: VerifyReport, ds: LatentDataset, s: dict, rows: list[dict], codec, chosen: set) -> None:
    """One shard's tar, streamed once: its length and sha256 against the manifest, every member
    (`tar_members` names the odd ones), the chosen latents decoded as they pass, then the
    index rows against the members found. Never more than one member in memory."""
    name = s.name
    decode = {}  # member → (its row, the ŷ shape it must decode to)
    for r in rows:
        if codec is not None and (name, r["key"]) in chosen:
            decode[f"{r['key']}.latent"] = (r, (r["latent_c"], r["valid_h"], r["valid_w"]))
            for m in _scale_members(r):  # `convert --scales`: the image's other encodings too
                decode[f"{r['key']}.{m['member']}"] = (r, (r["latent_c"], *m["valid_hw"]))
    members: dict[str, tuple[int, int]] = {}
    sha, faults = hashlib.sha256(), []
    try:
        with open_tar(ds.layout.shard_tar(name), s.tar_bytes, sha) as stream:
            for m, blob in tar_members(stream, name, faults.append, keep=decode.__contains__):
                members[m.name] = (m.offset, m.size)
                if blob is not None:
                    _decode(rep, name, *decode[m.name], blob, codec)
            stream.skip(s.tar_bytes - stream.pos)  # after a fault that ended the walk: hash the rest
    except OSError as exc:
        rep.faults.append(Fault(name, "", redact(f"tar unreadable: {exc}")))
        return
    if sha.hexdigest() != s.tar_sha256:
        rep.faults.append(Fault(name, "", "tar sha256 differs from the manifest"))
    rep.faults += [Fault(name, "", f.problem) for f in faults]
    _check_rows(rep, name, rows, members, ds.fingerprint)


def _scale_members(row: dict) -> list[dict]:
    return json.loads(row["members"]) if row.get("members") else []


def _decode(rep: VerifyReport, name: str, row: dict, shape: tuple, blob: bytes, codec) -> None:
    try:
        y = codec.decode_y(blob)
        if tuple(y.shape) != tuple(shape):
            raise LatentShardsError(f"decoded shape {tuple(y.shape)} differs from the index")
        rep.decoded += 1
    except Exception as exc:  # noqa: BLE001 - every undecodable sample is a named fault
        rep.faults.append(Fault(name, row["key"], f"latent does not decode: {exc}"))


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


def _check_rows(rep: VerifyReport, name: str, rows: list[dict], members: dict[str, tuple[int, int]],
                fingerprint: str) -> None:
    """The shard's index rows against the members its tar holds: one row per latent, and each
    row's offsets and sizes those of its own members."""
    latents = sum(1 for m in members if m.partition(".")[2] == "latent")  # scale members apart
    if len(rows) != latents:
        rep.faults.append(Fault(name, "", f"index lists {len(rows)} samples, tar holds {latents}"))
    for r in rows:
        key = r["key"]
        if f"{key}.latent" not in members:
            rep.faults.append(Fault(name, key, "latent member missing from tar"))
            continue
        for ext, col in (("latent", "latent"), ("json", "json"), ("cls", "cls"), ("mask.png", "mask")):
            if r.get(f"{col}_offset") is not None and \
                    members.get(f"{key}.{ext}") != (r[f"{col}_offset"], r[f"{col}_size"]):
                rep.faults.append(Fault(name, key, f"index offset/size do not point at {key}.{ext}"))
        for m in _scale_members(r):
            if members.get(f"{key}.{m['member']}") != (m["offset"], m["size"]):
                rep.faults.append(Fault(name, key, f"index offset/size do not point at {key}.{m['member']}"))
        if r["codec_fingerprint"] != fingerprint:
            rep.faults.append(Fault(name, key, "index row names another codec fingerprint"))
