"""Dead-leaves images: a synthetic source of natural-image statistics for codec training.

The dead-leaves model (Matheron; Lee, Mumford & Huang 2001) stacks opaque disks whose radii
follow a power law ``p(r) ∝ r^-3`` between ``r_min`` and ``r_max`` until the plane is covered:
the result is scale-invariant, with occlusion edges at every scale, as photographs are.
Colours are drawn from the pixels of real photographs, so the colour statistics are a
photograph's too; images are drawn at twice their size and averaged down, so edges are
anti-aliased. Deterministic for a seed; each image is generated independently.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dead_leaves(size: int, rng: np.random.Generator, palette: np.ndarray, r_min: float = 2.0,
                r_max: float | None = None, coverage: float = 0.999) -> np.ndarray:
    """One ``size`` × ``size`` RGB uint8 image; ``palette`` is ``[K, 3]`` uint8 colours to draw from.

    Disks are laid from the front to the back: each one paints only the pixels no earlier disk
    covers, so the image is done once ``coverage`` of it is painted (the last gaps take the mean
    colour)."""
    r_max = r_max or size / 2
    img = np.zeros((size, size, 3), np.uint8)
    free = np.ones((size, size), bool)
    left = size * size
    yy, xx = np.mgrid[0:size, 0:size]
    # inverse-CDF sampling of p(r) ∝ r^-3 on [r_min, r_max]
    a, b = r_min ** -2, r_max ** -2
    while left > (1 - coverage) * size * size:
        r = (a - rng.random() * (a - b)) ** -0.5
        cx, cy = rng.random(2) * size
        x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
        y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        inside = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 <= r * r
        paint = inside & free[y0:y1, x0:x1]
        n = int(paint.sum())
        if not n:
            continue
        img[y0:y1, x0:x1][paint] = palette[rng.integers(len(palette))]
        free[y0:y1, x0:x1][paint] = False
        left -= n
    img[free] = palette.mean(0).astype(np.uint8)
    return img


def dead_leaves_set(n: int, size: int, seed: int, photos: list[torch.Tensor],
                    colours: int = 4096) -> list[torch.Tensor]:
    """``n`` dead-leaves images as ``[3, size, size]`` float tensors, coloured from ``photos``."""
    rng = np.random.default_rng([seed, 0xDEAD])
    pix = torch.cat([p.flatten(1) for p in photos], 1)
    pick = rng.integers(pix.shape[1], size=colours)
    palette = (pix[:, pick].T * 255).round().clamp(0, 255).byte().numpy()
    out = []
    for i in range(n):
        # drawn at twice the size and averaged 2×2: edges anti-aliased, as a lens leaves them
        img = dead_leaves(2 * size, np.random.default_rng([seed, i]), palette, r_min=4.0)
        t = torch.from_numpy(img).permute(2, 0, 1).float().div_(255)
        out.append(F.avg_pool2d(t[None], 2)[0])
    return out
