"""Comparing datasets as files."""

from pathlib import Path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a dataset except the per-run logs (wall time differs run to run)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "logs"}
