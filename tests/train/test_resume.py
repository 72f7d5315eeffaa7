"""`train classify --resume`: a run killed mid-epoch and resumed ends as an uninterrupted one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.train.classify import TrainConfig, train_classifier
from pipeline.train.data import InputSpec


class Killed(BaseException):
    """The process dies after this step (nothing in the loop may catch it)."""


def _cfg(root, out) -> TrainConfig:
    return TrainConfig(InputSpec(str(root), window=(4, 4), batch_size=2, workers=2), arch="sresnet18",
                       epochs=2, lr=0.02, val_split="train", out=str(out))


def _run(cfg, kill_at=None) -> tuple[list[float], dict]:
    losses = []

    def step(epoch, batch, batches, loss):
        losses.append(loss)
        if kill_at == (epoch, batch):
            raise Killed

    r = train_classifier(cfg, log=lambda rec: None, on_batch=step)
    return losses, r


@pytest.mark.parametrize("kill_at", [(0, 3), (1, 1)])
def test_killed_and_resumed_equals_uninterrupted(latents, tmp_path, kill_at):
    ref_losses, ref = _run(_cfg(latents, tmp_path / "ref"))
    cfg = dataclasses.replace(_cfg(latents, tmp_path / "run"), checkpoint_every=1)
    with pytest.raises(Killed):
        _run(cfg, kill_at)
    losses = []

    def step(epoch, batch, batches, loss):
        losses.append(loss)

    resumed = train_classifier(dataclasses.replace(cfg, resume=True), log=lambda rec: None, on_batch=step)
    per_epoch = ref["batches_per_epoch"][0]  # 10 samples, 2 workers of 5, batches of 2: 6
    steps_before = kill_at[0] * per_epoch + kill_at[1]
    assert losses == ref_losses[steps_before:]  # the same samples, in the same order, from there on
    for (k, a), b in zip(ref["model"].state_dict().items(), resumed["model"].state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in ref["history"]]


def test_resume_with_other_options_is_refused(latents, tmp_path):
    cfg = _cfg(latents, tmp_path / "run")
    train_classifier(dataclasses.replace(cfg, epochs=1), log=lambda rec: None)
    with pytest.raises(ConfigError, match="other lr"):
        train_classifier(dataclasses.replace(cfg, epochs=1, lr=0.5, resume=True), log=lambda rec: None)
