"""Eq. 6: the task loss reaches the encoder, and only through ŷ."""

import pytest
import torch

from pipeline.codec.registry import get_architecture
from pipeline.codec_train.utility import (
    NOISE,
    STRAIGHT_THROUGH,
    ClassifyHead,
    quantise_for_task,
    rdu_loss,
)
from pipeline.errors import ConfigError


def _model():
    torch.manual_seed(0)
    return get_architecture("bmshj2018-hyperprior").build(16, 24).train()


def _trained():
    """The bundled default codec, training mode: its ŷ spreads over many integers (an untrained
    g_a's output rounds to all zeros, where a head's input gradient vanishes)."""
    from pipeline.codec.load import CodecSpec, load_codec

    return load_codec(CodecSpec()).model.train()


@pytest.mark.parametrize("mode", [NOISE, STRAIGHT_THROUGH])
def test_the_task_loss_reaches_g_a_and_nothing_the_task_does_not_use(mode):
    from tests.conftest import photo_crops

    model = _trained()
    head = ClassifyHead(96, ("a", "b", "c"))
    x, xt = photo_crops(2, 64), photo_crops(3, 64, seed=1)
    t = torch.tensor([0, 2, 1])
    terms = rdu_loss(model, x, 0.01, [(head, 10.0, xt, t)], mode)
    model.zero_grad()
    terms.task.backward()  # the utility term alone
    g_a = [p.grad for p in model.g_a.parameters()]
    assert all(g is not None for g in g_a) and sum(float(g.abs().sum()) for g in g_a) > 0
    assert all(p.grad is None for p in model.g_s.parameters())  # no reconstruction in the task path
    assert all(p.grad is None for p in model.h_s.parameters())  # nor the entropy model
    assert all(p.grad is not None for p in head.parameters())


def test_without_tasks_it_is_the_rate_distortion_loss():
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    head = ClassifyHead(24, ("a", "b"))
    torch.manual_seed(1)
    with_task = rdu_loss(model, x, 0.01, [(head, 0.0, x, torch.tensor([0, 1]))])
    torch.manual_seed(1)
    plain = rdu_loss(model, x, 0.01)
    assert float(plain.task) == 0.0
    assert torch.allclose(with_task.loss, plain.loss)
    assert torch.allclose(plain.loss, plain.bpp + 0.01 * 255**2 * plain.mse)


def test_straight_through_rounds_forward_and_passes_gradients():
    y = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    q = quantise_for_task(y, STRAIGHT_THROUGH)
    assert q.tolist() == [0.0, 2.0, -2.0]
    q.sum().backward()
    assert y.grad.tolist() == [1.0, 1.0, 1.0]
    n = quantise_for_task(torch.zeros(10000), NOISE)
    assert float(n.abs().max()) <= 0.5 and abs(float(n.mean())) < 0.02
    with pytest.raises(ConfigError):
        quantise_for_task(y, "round")
    with pytest.raises(ConfigError, match="latent model"):
        ClassifyHead(24, ("a", "b"), arch="resnet18")


def test_a_two_step_detection_informed_run_writes_a_codec_that_converts_and_verifies(tmp_path, photo_tree):
    """--utility detect: Faster R-CNN on ŷ of task windows cut from a VOC source (boxes moved
    with the windows); the codec it writes converts and verifies, the head is saved beside it."""
    import torch

    from pipeline.codec import checkpoint
    from pipeline.codec.load import CodecSpec
    from pipeline.codec_train.train import CodecTrainConfig, train_codec
    from pipeline.convert import ConvertJob, convert_dataset
    from pipeline.shards.verify import verify
    from pipeline.tasks.scenes import SceneTask, make_scene_task

    make_scene_task(tmp_path / "voc", SceneTask(train=4, val=1, size=128, max_objects=2, min_side=40,
                                                max_side=70, truncate_p=0, empty_p=0, difficult_below=0))
    out = tmp_path / "det.pt"
    cfg = CodecTrainConfig(out=str(out), arch="bmshj2018-hyperprior", N=8, M=8, steps=2, batch_size=2,
                           patch=64, threads=1, utility="detect", task_source=str(tmp_path / "voc"),
                           task_batch_size=2, task_patch=64, max_side=256)
    logs = []
    train_codec(cfg, on_log=logs.append)
    ck = checkpoint.read(str(out))
    utility = ck.metadata["utility"]
    assert utility["task"] == "detect" and utility["head"] == "fasterrcnn-sresnet18"
    head = torch.load(str(out) + ".head.pt", weights_only=False)
    assert head["arch"] == "fasterrcnn-sresnet18" and len(head["classes"]) >= 1
    assert logs and logs[-1]["task"] > 0
    convert_dataset(ConvertJob(str(photo_tree), str(tmp_path / "ds"), codec=CodecSpec(checkpoint=str(out))))
    rep = verify(str(tmp_path / "ds"))
    assert rep.ok and rep.decoded == 8
