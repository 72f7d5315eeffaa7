"""Converted bytes do not move: a fixed input converted with the default codec gives, file
for file, the sha256 committed in ``tests/fixtures/convert-golden.json``.

The fixture was recorded from the tree before the redesign step (#19) and checked equal
after it. The inputs are crops of bundled PNG photos written as BMP (lossless both ways, no
resampling, so neither Pillow's encoders nor its resizers can move them), converted at their
own size with one torch thread. ``g_a`` is float arithmetic: its bits can differ on another
processor, so the latent-dependent files are compared where the processor's model name,
torch's CPU capability and torch's version are those the fixture was recorded with;
elsewhere the test checks every file that does not pass through ``g_a`` and that two
conversions agree byte for byte.

Both shard orders are pinned (``sorted``, every dataset's order before ``--order`` existed,
and ``hashed``, today's default). To re-record after a deliberate format change:
``LATENT_SHARDS_REGOLD=1 pytest tests/convert/test_golden.py`` (or ``=hashed`` for one order;
and say why in the commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.images import ImagePolicy
from pipeline.tasks.photos import bundled_photos

FIXTURE = Path(__file__).parent.parent / "fixtures" / "convert-golden.json"
#: the dataset records its source's absolute path (manifest, plan, index): one fixed place
ROOT = Path("/tmp/latent-shards-golden")
#: files whose bytes do not depend on g_a's float arithmetic
CPU_FREE = ("plan.json", "codec/codec.pt", "codec/codec.json", "failures.parquet")


def golden_inputs(root: Path) -> Path:
    """Six crops (odd sizes: the padding path too) of the bundled PNG photos, as BMP, two classes."""
    pngs = [p for p in bundled_photos(colour_only=True) if p.path.suffix == ".png"][:6]
    for i, p in enumerate(pngs):
        px = np.asarray(Image.open(p.path).convert("RGB"))[:120 - 8 * (i % 3), :136 + 8 * (i % 2)]
        d = root / ("a" if i % 2 == 0 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(px)).save(d / f"{p.name}.bmp")
    return root


def tree_sha256(out: Path) -> dict[str, str]:
    """sha256 of every file of a dataset but its run logs (wall time, host)."""
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(out.rglob("*")) if f.is_file() and "logs" not in f.relative_to(out).parts}


def cpu_model() -> str:
    """The processor's model name (oneDNN picks its float kernels by ISA and cache sizes)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _convert(src: Path, out: Path, order: str) -> dict[str, str]:
    convert_dataset(ConvertJob(str(src), str(out), torch_threads=1,
                               options=ConvertOptions(ImagePolicy(size=0), shard_size=4, order=order)))
    return tree_sha256(out)


#: the fixture's files for each shard order: ``sorted`` is the order every dataset had before
#: the option (its bytes must never move, or their resumes would), ``hashed`` today's default
ORDERS = {"sorted": "files", "hashed": "files_hashed"}


def test_converted_bytes_match_the_committed_fixture():
    shutil.rmtree(ROOT, ignore_errors=True)
    try:
        _check(golden_inputs(ROOT / "src"))
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


def _check(src: Path) -> None:
    inputs = tree_sha256(src)
    capability = torch.backends.cpu.get_cpu_capability()
    for order, field in ORDERS.items():
        got = _convert(src, ROOT / order, order)
        regold = os.environ.get("LATENT_SHARDS_REGOLD", "")  # "1": every order; else the orders named
        if regold == "1" or order in regold.split(","):
            old = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
            here = {"cpu_capability": capability, "torch": torch.__version__, "cpu_model": cpu_model()}
            assert regold == "1" or all(old.get(k) == v for k, v in here.items()), (
                "the fixture's other orders were recorded on another machine or torch: re-record them "
                "all here (LATENT_SHARDS_REGOLD=1)")
            FIXTURE.write_text(json.dumps({**old, "cpu_capability": capability, "torch": torch.__version__,
                                           "cpu_model": cpu_model(), "recorded_from": "LATENT_SHARDS_REGOLD",
                                           "inputs": inputs, field: got}, indent=1, sort_keys=True) + "\n")
        want = json.loads(FIXTURE.read_text())
        assert inputs == want["inputs"], "the golden inputs themselves changed (a bundled photo?)"
        assert sorted(got) == sorted(want[field])
        same_cpu = (capability, torch.__version__, cpu_model()) == (want["cpu_capability"], want["torch"],
                                                                     want.get("cpu_model"))
        if same_cpu:
            diff = sorted(k for k in got if got[k] != want[field][k])
            assert not diff, f"converted bytes moved ({order} order): {diff}"
        else:  # another processor: what g_a does not touch, and determinism here
            assert {k: got[k] for k in CPU_FREE} == {k: want[field][k] for k in CPU_FREE}
    shutil.rmtree(ROOT / "hashed")
    assert _convert(src, ROOT / "again", "hashed") == got  # and the default order again, elsewhere
