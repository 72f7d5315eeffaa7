"""Comparing datasets as files."""

from pathlib import Path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a dataset except the per-run logs (wall time differs run to run)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "logs"}


def write_photo_tree(root: Path, n: int) -> Path:
    """The first ``n`` bundled colour photos as quality-90 JPEGs in two class folders."""
    from PIL import Image

    from pipeline.tasks.photos import bundled_photos

    for i, p in enumerate(bundled_photos(colour_only=True)[:n]):
        d = root / ("even" if i % 2 == 0 else "odd")
        d.mkdir(parents=True, exist_ok=True)
        Image.open(p.path).convert("RGB").save(d / f"{p.name}.jpg", quality=90)
    return root
