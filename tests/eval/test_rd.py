"""R-D curves: BD-rate, MS-SSIM, the plot, the results layout (`eval rd`: tests/jobs/test_cli.py)."""

import math
import warnings

from PIL import Image

from pipeline.eval.rd import Curve, RDPoint, bd_rate, plot_curves, worst_against_jpeg

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


def test_bd_rate_matches_a_hand_computed_case():
    """Two-point curves: log-rate is linear in PSNR, so the BD-rate is exp of the mean
    log-rate gap over the overlap [31, 35] dB, which is the gap at its middle (33 dB)."""
    anchor, test = [(1.0, 30.0), (4.0, 36.0)], [(1.0, 31.0), (2.0, 35.0)]
    b_a, b_t = math.log(4) / 6, math.log(2) / 4  # slopes of log(bpp) against PSNR
    a_a, a_t = -30 * b_a, -31 * b_t
    by_hand = (math.exp((a_t - a_a) + (b_t - b_a) * 33.0) - 1) * 100
    assert abs(bd_rate(anchor, test) - by_hand) < 1e-9
    # = exp(2·b_t − 3·b_a) − 1 = exp(−ln 2 / 2) − 1 = 1/√2 − 1
    assert abs(by_hand - (1 / math.sqrt(2) - 1) * 100) < 1e-12


def test_ms_ssim_is_one_for_identical_images_and_drops_with_noise():
    import numpy as np

    from pipeline.eval.rd import ms_ssim

    rng = np.random.default_rng(0)
    img = (np.kron(rng.integers(0, 256, (50, 50, 3)), np.ones((4, 4, 1)))).astype(np.uint8)
    assert ms_ssim(img, img) == 1.0
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(img).resize((50, 50)).resize((200, 200)))
    assert ms_ssim(img, blurred) < ms_ssim(img, noisy) < 1.0  # noise hurts less than losing detail
    assert math.isnan(ms_ssim(img[:160], img[:160]))  # too small for 5 scales


def test_curves_speak_compressais_results_layout():
    c = Curve("ours", [0.2, 0.4], [30.0, 33.0], [0.95, 0.97])
    assert c.to_json() == {"name": "ours", "results": {
        "bpp": [0.2, 0.4], "psnr": [30.0, 33.0], "psnr-rgb": [30.0, 33.0],
        "ms-ssim": [0.95, 0.97], "ms-ssim-rgb": [0.95, 0.97]}}
    assert "ms-ssim" not in Curve("small", [0.2], [30.0], [float("nan")]).to_json()["results"]


def test_the_worst_image_is_the_one_furthest_below_jpeg():
    nan = float("nan")
    rows = [RDPoint("sea", 0.3, 33.0, 31.0, 34.0, 0.1), RDPoint("cloth", 0.4, 22.0, 30.5, 31.0, 0.1),
            RDPoint("tiny", 0.02, 15.0, nan, nan, 0.1)]
    assert worst_against_jpeg(rows).image == "cloth"  # 8.5 dB below; "tiny" has no JPEG figure
    assert worst_against_jpeg(rows[2:]) is None
