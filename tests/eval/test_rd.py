"""Rate–distortion curves: BD-rate, the curve evaluation and the eval-codec command."""

import json
import math
import warnings

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.eval.rd import Curve, bd_rate, plot_curves

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")


def _curve(scale: float) -> list[tuple[float, float]]:
    """A log-shaped R-D curve; ``scale`` multiplies every rate at equal PSNR."""
    return [(scale * b, 30 + 6 * math.log2(b / 0.25)) for b in (0.2, 0.35, 0.5, 0.8, 1.1)]


def test_bd_rate_measures_rate_at_equal_quality():
    assert abs(bd_rate(_curve(1.0), _curve(1.0))) < 1e-9
    assert abs(bd_rate(_curve(1.0), _curve(0.5)) - (-50.0)) < 1e-6
    assert abs(bd_rate(_curve(1.0), _curve(1.2)) - 20.0) < 1e-6
    # three points only: a lower-order fit, still exact for this shape
    assert abs(bd_rate(_curve(1.0), _curve(0.8)[:3]) - (-20.0)) < 1e-6
    assert math.isnan(bd_rate(_curve(1.0), [(0.3, 10.0), (0.4, 11.0)]))  # no PSNR overlap
    assert math.isnan(bd_rate(_curve(1.0), [(0.3, 31.0)]))


def test_plot_is_a_png(tmp_path):
    curves = [Curve("ours", *map(list, zip(*_curve(0.8), strict=True))),
              Curve("JPEG (Pillow)", *map(list, zip(*_curve(1.0), strict=True)))]
    plot_curves(curves, tmp_path / "rd.png", "test")
    assert Image.open(tmp_path / "rd.png").size[0] > 100


def test_eval_codec_curve_of_several_checkpoints(tmp_path):
    from pipeline.codec import checkpoint
    from tests.conftest import tiny_checkpoint

    paths = []
    for i, lmbda in enumerate((0.001, 0.01, 0.1)):
        ck = tiny_checkpoint("bmshj2018-hyperprior", seed=i)
        ck = checkpoint.Checkpoint(ck.arch, ck.N, ck.M, ck.state_dict, lmbda=lmbda)
        paths.append(tmp_path / f"c{i}.pt")
        checkpoint.save(ck, str(paths[i]))
    args = ["eval-codec", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]),
            "--baseline", str(paths[2]), "--plot", str(tmp_path / "rd.png"),
            "--output", str(tmp_path / "rd.json")]
    res = CliRunner().invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "BD-rate against JPEG" in res.output and "the curve at that bpp" in res.output
    out = json.loads((tmp_path / "rd.json").read_text())
    names = [c["name"] for c in out["curves"]]
    assert names[-2:] == ["JPEG (Pillow)", "WebP (Pillow)"] and str(paths[2]) in names
    ours = out["curves"][0]["results"]
    assert len(ours["bpp"]) == 2 and ours["bpp"] == sorted(ours["bpp"]) and len(ours["psnr"]) == 2
    assert set(out["bd_rate_percent"]) == {"JPEG", "WebP"}
    assert np.isfinite(out["mean"][str(paths[0])]["codec_psnr"])
    assert Image.open(tmp_path / "rd.png").format == "PNG"
