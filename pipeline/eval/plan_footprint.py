"""Peak memory of planning a huge URI list: the driver's cost before any image is read.

``write_synthetic_list`` writes N rows of URIs across several Parquet files (in chunks, so
the writer stays small); ``measure`` plans it in a fresh process (scan → shard records →
every shard's entries, as the executor would take them) and reports that process's peak RSS
beside its RSS before planning. ``latents bench --plan-rows N`` prints both.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_synthetic_list(folder: Path, rows: int, files: int = 10, classes: int = 1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-rows // files)
    for f in range(files):
        start, stop = f * per, min(rows, (f + 1) * per)
        with pq.ParquetWriter(folder / f"part-{f:04d}.parquet",
                              pa.schema([("uri", pa.string()), ("label", pa.string())])) as w:
            for s in range(start, stop, 1_000_000):
                ids = range(s, min(stop, s + 1_000_000))
                w.write_table(pa.table({
                    "uri": [f"s3://corpus/images/{i // 1000:05d}/{i:09d}.jpg" for i in ids],
                    "label": [f"class{i % classes:04d}" for i in ids]}), row_group_size=100_000)
    return folder


def _peak_rss_mib() -> float:
    """This process's peak RSS. /proc's VmHWM starts afresh at exec; ``ru_maxrss`` would carry
    the peak of the process that forked us."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(src: str, shard_size: int) -> dict:
    from pipeline.convert.plan import UriListPlan
    from pipeline.sources.uris import UriList

    before = _peak_rss_mib()
    t0 = time.perf_counter()
    plan = UriListPlan(UriList.scan(src), shard_size)
    planned = time.perf_counter() - t0
    rows = sum(len(t.entries) for t in plan.tasks({r.name for r in plan.records}))
    return {"rows": rows, "shards": len(plan.records), "plan_seconds": round(planned, 1),
            "seconds": round(time.perf_counter() - t0, 1), "rss_before_mib": round(before),
            "peak_rss_mib": round(_peak_rss_mib())}


def measure(src: str, shard_size: int = 1000) -> dict:
    """Plan ``src`` in a fresh Python process; its figures as a dict."""
    out = subprocess.run([sys.executable, "-m", "pipeline.eval.plan_footprint", src, str(shard_size)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]))))
