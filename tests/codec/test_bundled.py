"""The bundled rate ladder: every point ships, with an exact integer h_s, in rate order."""

from pipeline.codec import checkpoint
from pipeline.codec.load import BUNDLED_CURVE, bundled_checkpoint


def test_the_ladder_ships_in_rate_order_with_integer_h_s():
    cks = [checkpoint.read(str(bundled_checkpoint(n))) for n in BUNDLED_CURVE]
    assert len(cks) >= 4 and "default" in BUNDLED_CURVE
    lmbdas = [ck.lmbda for ck in cks]
    assert lmbdas == sorted(lmbdas) and len(set(lmbdas)) == len(lmbdas)  # low to high rate
    assert all(ck.integer_h_s is not None for ck in cks)
    assert all((ck.arch, ck.N, ck.M) == (cks[0].arch, cks[0].N, cks[0].M) for ck in cks)
