"""The console and the error exit shared by the `latents` command modules."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(exc: Exception) -> None:
    """Print ``exc`` as a one-line error and exit with status 2."""
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)
