"""The console, the error exit and the dataset summary table shared by the `latents` commands."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(exc: Exception) -> None:
    """Print ``exc`` as a one-line error and exit with status 2."""
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def print_summary(s: dict) -> None:
    """A latent dataset's summary (`pipeline.shards.dataset.summarize`) as a table."""
    t = Table(title=f"latent dataset {s['root']}", show_header=False)
    for k in ("samples", "failures", "shards", "classes", "codec"):
        t.add_row(k, str(s[k]))
    t.add_row("splits", ", ".join(f"{k}: {v['samples']}" for k, v in s["splits"].items()))
    t.add_row("source bytes", f"{s['source_bytes']:,}")
    t.add_row("shard bytes", f"{s['shard_bytes']:,}")
    t.add_row("storage ratio", f"{s['storage_ratio']}x" if s["storage_ratio"] else "-")
    t.add_row("bpp mean / p50 / p95",
              f"{s['bpp_mean'] or float('nan'):.3f} / {s['bpp_p50']:.3f} / {s['bpp_p95']:.3f}")
    for reason, n in s["failures_by_reason"].items():
        t.add_row(f"failed: {reason}", str(n))
    console.print(t)
