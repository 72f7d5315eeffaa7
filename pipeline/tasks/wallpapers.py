"""Real photographs from Debian's wallpaper packages: a codec training set and a held-out set.

The six packages the codec issue names were reviewed image by image; `gnome-backgrounds`,
`sway-backgrounds` and `lomiri-wallpapers` hold illustrations only, so their photographs are
none. The photographs of the other three are listed in `PHOTOS` (read from
``wallpapers.json``), each with its role: `train`
(codec training reads it) or `heldout` (only `latents eval rd` reads it, never a training or
selection step). Nothing is committed: `fetch_packages` runs ``apt-get download`` and
``dpkg -x`` at training time, and `build_photo_sets` writes

    DEST/train/NAME.EXT      the original file, as the package ships it
    DEST/heldout/NAME.png    Kodak-sized: shorter side 512 (antialiased), centre 768×512 or 512×768
    DEST/photos.json         every file: role, package and version, path in the package,
                             sha256 of the original, licence and author as the package states them
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from pipeline.errors import SourceError
from pipeline.images import upright_rgb

#: the packages the codec issue names; those without a photograph are reviewed, not fetched
PACKAGES = ("lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "gnome-backgrounds",
            "plasma-workspace-wallpapers", "sway-backgrounds")
ILLUSTRATIONS_ONLY = ("lomiri-wallpapers", "gnome-backgrounds", "sway-backgrounds")
KODAK = (768, 512)
DEFAULT_DEST = Path("data/photos")  # where `make photos` builds the sets
TRAIN, HELDOUT = "train", "heldout"


@dataclass(frozen=True)
class WallPhoto:
    name: str
    package: str
    member: str  # path inside the package
    role: str  # TRAIN or HELDOUT


#: the photographs and their roles: data, in wallpapers.json beside this module
_TABLE = json.loads(Path(__file__).with_name("wallpapers.json").read_text())
PHOTOS: tuple[WallPhoto, ...] = tuple(WallPhoto(**row) for row in _TABLE["photos"])


def photos(role: str | None = None) -> list[WallPhoto]:
    return [p for p in PHOTOS if role is None or p.role == role]


def fetch_packages(dest: Path, packages: tuple[str, ...] | None = None) -> dict[str, str]:
    """``apt-get download`` each package holding a listed photograph into ``dest/debs`` and
    unpack it with ``dpkg -x`` into ``dest/pkgs/PACKAGE``; returns package → version."""
    dest = Path(dest).resolve()
    packages = packages or tuple(sorted({p.package for p in PHOTOS}))
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    versions = {}
    for pkg in packages:
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            _run(["apt-get", "download", pkg], debs, f"downloading {pkg}")
            have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            raise SourceError(f"apt-get download {pkg} left no .deb in {debs}")
        root = dest / "pkgs" / pkg
        if not root.is_dir():
            tmp = root.with_name(f".{pkg}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _run(["dpkg", "-x", str(have[-1]), str(tmp)], debs, f"unpacking {have[-1].name}")
            tmp.rename(root)  # whole or absent: a rerun after a kill unpacks again
        versions[pkg] = have[-1].name.split("_")[1].replace("%3a", ":")
    return versions


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"{what}: {exc}; this needs Debian's apt-get and dpkg and access to a "
                          "package mirror") from exc
    if r.returncode:
        raise SourceError(f"{what} failed ({' '.join(cmd)}): {r.stderr.strip()[-400:]}")


def build_photo_sets(dest: Path, versions: dict[str, str]) -> dict:
    """The training files, the Kodak-sized held-out set and ``photos.json`` from unpacked
    packages under ``dest/pkgs``; returns the manifest written."""
    rows = []
    for role in (TRAIN, HELDOUT):
        out = dest / role
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    for p in PHOTOS:
        src = dest / "pkgs" / p.package / p.member
        if not src.is_file():
            raise SourceError(f"{p.package} has no {p.member}; its version {versions.get(p.package, '?')} "
                              "may differ from the one this list was made from")
        data = src.read_bytes()
        if p.role == TRAIN:
            file = dest / TRAIN / f"{p.name}{src.suffix.lower()}"
            file.write_bytes(data)
        else:
            file = dest / HELDOUT / f"{p.name}.png"
            kodak_crop(upright_rgb(data)).save(file)
        licence, author = licence_of(dest / "pkgs" / p.package, p)
        rows.append({**asdict(p), "file": str(file.relative_to(dest)), "version": versions.get(p.package),
                     "sha256": hashlib.sha256(data).hexdigest(), "licence": licence, "author": author})
    manifest = {"packages": versions, "illustrations_only": list(ILLUSTRATIONS_ONLY), "photos": rows}
    (dest / "photos.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def kodak_crop(rgb) -> Image.Image:
    """Shorter side to 512 (Lanczos, antialiased), then the centre 768×512 (or 512×768)."""
    im = Image.fromarray(rgb)
    w, h = im.size
    s = KODAK[1] / min(w, h)
    im = im.resize((max(KODAK[1], round(w * s)), max(KODAK[1], round(h * s))), Image.Resampling.LANCZOS)
    tw, th = KODAK if w >= h else KODAK[::-1]
    left, top = (im.width - tw) // 2, (im.height - th) // 2
    return im.crop((left, top, left + tw, top + th))


def licence_of(pkg_root: Path, photo: WallPhoto) -> tuple[str, str]:
    """(licence, author) as the package states them: a plasma wallpaper's metadata.json, or
    the DEP-5 ``Files:`` stanza of the package's copyright file naming the file."""
    if photo.package == "plasma-workspace-wallpapers":
        meta = json.loads((pkg_root / Path(photo.member).parents[2] / "metadata.json").read_text())
        plugin = meta.get("KPlugin", {})
        return plugin.get("License", "?"), ", ".join(a.get("Name", "?") for a in plugin.get("Authors", []))
    text = (pkg_root / "usr/share/doc" / photo.package / "copyright").read_text(errors="replace")
    base = Path(photo.member).name
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+)$", stanza, re.M)
        if files and any(Path(f).name == base for f in files.group(1).split()):
            lic = re.search(r"^License:\s*(.+)$", stanza, re.M)
            who = re.search(r"^Copyright:\s*(.+)$", stanza, re.M)
            return (lic.group(1).strip() if lic else "?"), (who.group(1).strip() if who else "?")
    return "?", "?"


def training_files(dest: Path) -> list[dict]:
    """The ``photos.json`` rows of the training files under ``dest``, refusing a set whose
    manifest is missing or lists a held-out photo among them."""
    path = dest / "photos.json"
    if not path.is_file():
        raise SourceError(f"{dest} has no photos.json: build it with `make photos` "
                          f"(latents photos fetch {dest})")
    rows = json.loads(path.read_text())["photos"]
    held = {r["name"] for r in rows if r["role"] == HELDOUT}
    train = [r for r in rows if r["role"] == TRAIN]
    if held & {r["name"] for r in train}:
        raise SourceError(f"{path} lists {sorted(held & {r['name'] for r in train})} both as training and "
                          "held-out photos")
    return train
