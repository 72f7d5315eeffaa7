"""A container may not declare more than its reader allows: forged sizes are refused before any
allocation, in well under a second and a few MB, by the codec, the loader and `verify`."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from pipeline.codec.codec import CODER
from pipeline.codec.container import MAX_PIXELS, LatentContainer
from pipeline.codec.entropy import channel_indexes
from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.errors import ContainerError, LatentShardsError
from pipeline.images import ImagePolicy
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.verify import verify


def forged(codec, side: int, y_bytes: int = 64) -> bytes:
    """A well-formed container whose header declares a ``side``² image: a real all-zero z
    and ``y_bytes`` of y, as the reliability probe built it."""
    n, m = codec.identity.N, codec.identity.M
    z_shape = (n, side // 64, side // 64)
    z = codec.z_tables.encode(np.zeros(z_shape, np.int32), channel_indexes(z_shape))
    c = LatentContainer(CODER, bytes.fromhex(codec.identity.fingerprint[:16]), (side, side), (side, side),
                        (m, side // 16, side // 16), z_shape, (b"\x5a" * y_bytes, z), 0)
    return c.pack()


@pytest.fixture(scope="module")
def bomb(default_codec, tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.latent"
    path.write_bytes(forged(default_codec, 16384))
    return path


PROBE = """
import json, resource, sys, time
from pipeline.codec.load import load_codec
from pipeline.errors import ContainerError
codec = load_codec()
blob = open(sys.argv[1], "rb").read()
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2**20, resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    codec.decode_y(blob)
    kind, msg = "none", ""
except Exception as exc:
    kind, msg = type(exc).__name__, str(exc)
seconds = time.perf_counter() - t0
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"kind": kind, "msg": msg, "seconds": seconds, "grown_kb": grown}))
"""


def test_a_forged_size_is_refused_fast_and_small(bomb):
    """The probe's 16384² container cost 14 s and 7 GB; under a 512 MB address-space limit it
    is now a ContainerError in well under a second, growing the process by a few MB at most."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(bomb)], capture_output=True, text=True,
                         timeout=120, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kind"] == "ContainerError", r
    assert "16384x16384" in r["msg"] and "50.0 MP limit" in r["msg"]
    assert r["seconds"] < 0.5, r
    assert r["grown_kb"] < 8 * 1024, r


def test_strings_too_short_for_their_grid_are_refused(default_codec, bomb):
    """Past the size bound (a reader allowing 300 MP), 64 bytes cannot hold 100 M y symbols."""
    with pytest.raises(ContainerError, match="holds 64 bytes of y for a 96x1024x1024 grid"):
        default_codec.parse(bomb.read_bytes(), max_pixels=300_000_000)
    assert default_codec.z_tables.min_bits > 0 and default_codec.y_tables.min_bits > 0


def test_real_containers_are_far_above_the_length_floor(default_codec):
    """The floor never refuses a real stream: a flat grey image (the cheapest content there is)
    codes each grid with many times the floor's bytes."""
    import torch

    flat = torch.full((1, 3, 1024, 1024), 0.5)
    c = default_codec.encode(flat, [(1024, 1024)])[0].container
    for string, shape, tables in ((c.strings[0], c.y_shape, default_codec.y_tables),
                                  (c.strings[1], c.z_shape, default_codec.z_tables)):
        assert len(string) > 4 * tables.min_bytes(int(np.prod(shape))), (len(string), shape)
    assert default_codec.decode_y(c.pack()).shape == (96, 64, 64)


def test_the_bound_follows_the_dataset(photo_tree, tmp_path, default_codec, bomb):
    """A dataset converted with a larger --max-pixels records it and its codec allows it; a
    codec on its own keeps the converter's default."""
    out = tmp_path / "out"
    policy = ImagePolicy(max_pixels=400_000_000)
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(policy=policy)))
    ds = LatentDataset.open(str(out))
    codec = ds.load_codec()
    assert codec.max_pixels == ds.max_pixels == 400_000_000
    assert default_codec.max_pixels == MAX_PIXELS
    key = ds.index.column("key")[0].as_py()
    assert codec.decode_y(ds.latent_bytes(key)).shape[0] == 96
    # allowed by the dataset's size bound, so the length floor is what refuses it
    with pytest.raises(ContainerError, match="bytes of y"):
        codec.decode_y(bomb.read_bytes())
    with pytest.raises(ContainerError, match="above the 50.0 MP limit"):
        default_codec.decode_y(bomb.read_bytes())


def test_the_loader_and_verify_refuse_a_bomb_member(photo_tree, tmp_path, bomb):
    """One sample's latent replaced by the forged one (the manifest's checksums made to agree):
    the loader skips it (strict: raises, naming it) and `verify` names it, both quickly."""
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out), options=ConvertOptions(shard_size=4)))
    path = out / "shards" / "train-000001.tar"
    src = tarfile.open(fileobj=io.BytesIO(path.read_bytes()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for i, m in enumerate(src.getmembers()):
            data = src.extractfile(m).read()
            if i == 0:
                assert m.name.endswith(".latent")
                victim, data = m.name.removesuffix(".latent"), bomb.read_bytes()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    man = json.loads((out / "manifest.json").read_text())
    man["shards"][1]["tar_bytes"] = len(buf.getvalue())
    man["shards"][1]["tar_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(man))
    loose = LatentShardDataset(LatentLoaderConfig(str(out), train=False, window=None))
    assert len([t for _, t in loose if t != -1]) == 7
    strict = LatentShardDataset(LatentLoaderConfig(str(out), train=False, window=None, strict=True))
    with pytest.raises(LatentShardsError, match=f"{victim}.*above the 50.0 MP limit"):
        list(strict)
    rep = verify(str(out))
    assert any(f.key == victim and "above the 50.0 MP limit" in f.problem for f in rep.faults), rep.faults


def test_a_non_integer_limit_in_a_manifest_is_named(photo_tree, tmp_path):
    out = tmp_path / "out"
    convert_dataset(ConvertJob(str(photo_tree), str(out)))
    m = json.loads((out / "manifest.json").read_text())
    m["preprocessing"]["max_pixels"] = "lots"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LatentShardsError, match="max_pixels is 'lots', not a positive integer"):
        LatentDataset.open(str(out)).load_codec()

