"""Rate–distortion curves: BD-rate and the plot (the eval-codec command: tests/jobs/test_cli.py)."""

import math
import warnings

from PIL import Image

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
