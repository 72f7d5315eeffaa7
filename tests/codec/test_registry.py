"""The slim hyperprior's non-linearities: GDN, simplified GDN and ReLU share every
convolution's name and shape, so checkpoints, widening and N/M inference read them alike;
their cost differs only in GDN's channel mixing, which the bench's multiply-add count sees."""

import torch
from compressai.layers import GDN, GDN1

from pipeline.codec.registry import get_architecture
from pipeline.eval.bench import gmac

VARIANTS = ("slim-hyperprior", "slim-hyperprior-sgdn", "slim-hyperprior-relu")


def test_variants_differ_only_in_the_nonlinearity():
    models = {a: get_architecture(a).build(16, 24) for a in VARIANTS}
    convs = {a: {k: v.shape for k, v in m.state_dict().items() if "beta" not in k and "gamma" not in k}
             for a, m in models.items()}
    assert convs["slim-hyperprior"] == convs["slim-hyperprior-sgdn"] == convs["slim-hyperprior-relu"]
    kinds = {a: {type(layer) for layer in (*m.g_a, *m.g_s)} for a, m in models.items()}
    assert GDN in kinds["slim-hyperprior"] and GDN1 not in kinds["slim-hyperprior"]
    assert GDN1 in kinds["slim-hyperprior-sgdn"]
    assert not any(issubclass(t, GDN) for t in kinds["slim-hyperprior-relu"])
    assert torch.nn.ReLU in kinds["slim-hyperprior-relu"] and torch.nn.ReLU not in kinds["slim-hyperprior"]
    assert all(get_architecture(a).infer_channels(m.state_dict()) == (16, 24) for a, m in models.items())
    assert all(m.g_s[1].inverse for a, m in models.items() if a != "slim-hyperprior-relu")


def test_gdn_channel_mixing_counts_in_the_multiply_adds():
    x = torch.zeros(1, 3, 64, 64)
    gdn, sgdn, relu = (gmac(get_architecture(a).build(16, 24).g_a, x) for a in VARIANTS)
    mixing = 16 * 16 * (32 * 32 + 16 * 16 + 8 * 8) / 1e9  # three GDNs at /2, /4, /8
    assert abs(gdn - relu - mixing) < 1e-12 and gdn == sgdn
