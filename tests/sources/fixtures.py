"""Generated ImageNet-, OpenImages- and URI-list-layout inputs (with their real-world quirks)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.conftest import gradient

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _jpeg(seed: int, mode: str = "RGB", size=(96, 72)) -> bytes:
    im = Image.fromarray(gradient(size[1], size[0], seed))
    buf = io.BytesIO()
    (im.convert(mode) if mode != "RGB" else im).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient(64, 80, seed)).save(buf, "PNG")
    return buf.getvalue()


def make_imagenet(root: Path) -> dict:
    """train: 3 classes x 2 images (one CMYK, one PNG named .JPEG, one grayscale); val: flat."""
    seed = 0
    for c, wnid in enumerate(WNIDS):
        d = root / "train" / wnid
        d.mkdir(parents=True)
        for n in range(2):
            seed += 1
            data = {(0, 0): _jpeg(seed, "CMYK"), (1, 1): _png(seed), (2, 0): _jpeg(seed, "L")}.get(
                (c, n), _jpeg(seed))
            (d / f"{wnid}_{n + 1}.JPEG").write_bytes(data)
    (root / "val").mkdir()
    sol = ["ImageId,PredictionString"]
    for i in range(1, 5):
        stem = f"ILSVRC2012_val_{i:08d}"
        (root / "val" / f"{stem}.JPEG").write_bytes(_jpeg(100 + i))
        if i != 4:  # val 4 has no label: must become a failures row, not vanish
            sol.append(f"{stem},{WNIDS[i % 3]} 1 2 30 40 {WNIDS[i % 3]} 5 5 9 9")
    (root / "LOC_val_solution.csv").write_text("\n".join(sol) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "n01443537 goldfish, Carassius auratus\nn01440764 tench, Tinca tinca\n"
        "n01484850 great white shark, white shark\n")
    return {"train": 6, "val": 4, "val_labels": {1: WNIDS[1], 2: WNIDS[2], 3: WNIDS[0]}}


def make_openimages(root: Path) -> dict:
    ids = {"train": ["000a1249af2bc5f0", "0013ea2087020901", "001a995c1bd1f5b1"],
           "validation": ["0001eeaf4aed83f9", "0004886b7d043cfd"]}
    for sp, image_ids in ids.items():
        (root / sp).mkdir(parents=True)
        for i, image_id in enumerate(image_ids):
            (root / sp / f"{image_id}.jpg").write_bytes(_jpeg(200 + i))
    (root / "oidv7-class-descriptions-boxable.csv").write_text(  # no header row
        "/m/011k07,Tortoise\n/m/01bjv,Bus\n/m/0199g,Bicycle\n")
    (root / "train-annotations-human-imagelabels-boxable.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n"
        "000a1249af2bc5f0,verification,/m/01bjv,1\n"
        "000a1249af2bc5f0,verification,/m/0199g,0\n"
        "0013ea2087020901,crowdsource-verification,/m/011k07,1\n")
    (root / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,"
        "IsGroupOf,IsDepiction,IsInside\n"
        "000a1249af2bc5f0,xclick,/m/01bjv,1,0.1,0.6,0.2,0.9,0,1,0,0,0\n")
    (root / "validation-annotations-human-imagelabels-boxable.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n0001eeaf4aed83f9,verification,/m/0199g,1\n")
    return {"train": 3, "validation": 2}


def make_uri_list(root: Path, photo_tree: Path) -> Path:
    files = sorted(photo_tree.rglob("*.jpg"))
    root.mkdir(parents=True, exist_ok=True)
    lines = ["uri,label"] + [f"{f},{f.parent.name}" for f in (*files[:2], *files[-2:])]
    lines.append(f"{root / 'missing.jpg'},even")  # listed but absent: a "missing" row
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root / "list.csv"
