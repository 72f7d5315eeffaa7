"""The real photos that ship inside scikit-image, scikit-learn and matplotlib, by stable name."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SourceError


@dataclass(frozen=True)
class Photo:
    name: str  # stable, unique, tar-safe
    package: str
    path: Path
    colour: bool
    holdout: bool  # held out of codec training, used to evaluate it


# (package, path inside the package, name, colour, holdout). Held out: one photo from two
# different packages, so the codec's evaluation sees scenes it never trained on.
_TABLE = [
    ("skimage", "data/astronaut.png", "astronaut", True, False),
    ("skimage", "data/chelsea.png", "chelsea", True, True),
    ("skimage", "data/coffee.png", "coffee", True, False),
    ("skimage", "data/hubble_deep_field.jpg", "hubble", True, False),
    ("skimage", "data/ihc.png", "ihc", True, False),
    ("skimage", "data/motorcycle_left.png", "motorcycle-left", True, False),
    ("skimage", "data/motorcycle_right.png", "motorcycle-right", True, False),
    ("skimage", "data/retina.jpg", "retina", True, False),
    ("skimage", "data/rocket.jpg", "rocket", True, False),
    ("sklearn", "datasets/images/china.jpg", "china", True, False),
    ("sklearn", "datasets/images/flower.jpg", "flower", True, True),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace-hopper", True, False),
    ("skimage", "data/brick.png", "brick", False, False),
    ("skimage", "data/camera.png", "camera", False, False),
    ("skimage", "data/coins.png", "coins", False, False),
    ("skimage", "data/grass.png", "grass", False, False),
    ("skimage", "data/gravel.png", "gravel", False, False),
    ("skimage", "data/moon.png", "moon", False, False),
]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"package {package!r} is not installed; `make install` brings it "
            "(the bundled photos ship inside it)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photos(colour_only: bool = False) -> list[Photo]:
    """Every bundled photo that is present, in a fixed order."""
    out = []
    for package, rel, name, colour, holdout in _TABLE:
        if colour_only and not colour:
            continue
        path = _package_dir(package) / rel
        if path.is_file():
            out.append(Photo(name, package, path, colour, holdout))
    if not out:
        raise SourceError("no bundled photo found in scikit-image, scikit-learn, matplotlib")
    return out
