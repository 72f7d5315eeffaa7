"""`latents demo`: the bundled photos → a latent dataset → inspect table → reconstruction sheet."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.images import ImagePolicy, prepare_image
from pipeline.shards.dataset import LatentDataset
from pipeline.tasks.photos import bundled_photos


def materialize_photos(folder: Path) -> Path:
    """Copy the bundled photos into a class-per-folder tree (class = shipping package)."""
    for p in bundled_photos():
        dest = folder / p.package / f"{p.name}{p.path.suffix}"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p.path, dest)
    return folder


def _grid(tiles: list[np.ndarray], per_row: int, gap: int = 6) -> np.ndarray:
    """Tiles of equal height, left to right, ``per_row`` to a row, on white."""
    rows = []
    for s in range(0, len(tiles), per_row):
        row = np.concatenate([np.pad(t, ((0, gap), (0, gap), (0, 0)), constant_values=255)
                              for t in tiles[s : s + per_row]], axis=1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                           for r in rows], axis=0)


def contact_sheet(dataset_root: str, out_png: Path, policy: ImagePolicy, height: int = 160) -> Path:
    """Originals (as the codec saw them) above reconstructions from the stored bitstreams."""
    ds = LatentDataset.open(dataset_root)
    codec = ds.load_codec()
    rows = ds.index.select(["key", "source_uri", "bpp"]).to_pylist()
    tiles = []
    for r in rows:
        with open(r["source_uri"], "rb") as f:
            prep = prepare_image(f.read(), policy)
        h, w = prep.enc_hw
        orig = prep.pixels[:h, :w]
        rec = codec.reconstruct(ds.latent_bytes(r["key"]))
        rec = (rec.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
        pair = np.concatenate([orig, rec], axis=0)
        scale = height * 2 / pair.shape[0]
        tiles.append(np.asarray(Image.fromarray(pair).resize(
            (max(1, round(pair.shape[1] * scale)), height * 2), Image.Resampling.BICUBIC)))
    sheet = _grid(tiles, per_row=6)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out_png)
    return out_png
