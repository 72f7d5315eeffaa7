"""`train-codec --resume`: a run killed after a checkpoint and resumed ends with the weights
of an uninterrupted run, bit for bit; what it trained on is listed beside the weights."""

import dataclasses
import json

import pytest
import torch

from pipeline.codec import checkpoint
from pipeline.codec_train.train import CodecTrainConfig, train_codec
from pipeline.errors import ConfigError


class Killed(BaseException):
    """The process dies here (nothing in the loop may catch it)."""


def _cfg(out) -> CodecTrainConfig:
    return CodecTrainConfig(out=str(out), arch="bmshj2018-hyperprior", N=8, M=8, steps=6, batch_size=2,
                            patch=64, threads=1, save_every=2, max_side=256)


def _weights(out) -> dict:
    return torch.load(str(out) + ".state", weights_only=False)["model"]


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    train_codec(_cfg(tmp_path / "whole.pt"), on_log=lambda d: None)

    def kill(step):
        if step == 3:  # after step 2's checkpoint, before step 4's
            raise Killed

    cut = _cfg(tmp_path / "cut.pt")
    with pytest.raises(Killed):
        train_codec(cut, on_log=lambda d: None, on_step=kill)
    with pytest.raises(ConfigError, match="--resume"):
        train_codec(cut, on_log=lambda d: None)  # a fresh run never overwrites an unfinished one
    with pytest.raises(ConfigError, match="other lmbda"):
        train_codec(dataclasses.replace(cut, resume=True, lmbda=0.5), on_log=lambda d: None)
    seen = []
    train_codec(dataclasses.replace(cut, resume=True), on_log=lambda d: None, on_step=seen.append)
    assert seen == [3, 4, 5, 6]
    whole, resumed = _weights(tmp_path / "whole.pt"), _weights(tmp_path / "cut.pt")
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    a, b = (checkpoint.read(str(tmp_path / f)).state_dict for f in ("whole.pt", "cut.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the finalized weights and CDF tables too


def test_the_data_manifest_lists_every_training_photo(tmp_path):
    train_codec(dataclasses.replace(_cfg(tmp_path / "c.pt"), steps=1), on_log=lambda d: None)
    data = json.loads((tmp_path / "c.pt.data.json").read_text())
    names = [d["name"] for d in data["bundled"]]
    assert names and all(d["package"] in ("skimage", "sklearn", "matplotlib") for d in data["bundled"])
    assert not set(names) & set(data["bundled_holdout"])


def test_a_time_budget_stops_with_a_state_that_resumes_to_the_same_weights(tmp_path):
    train_codec(_cfg(tmp_path / "whole.pt"), on_log=lambda d: None)
    cut = dataclasses.replace(_cfg(tmp_path / "cut.pt"), max_minutes=1e-6)  # out of time after one step
    ck = train_codec(cut, on_log=lambda d: None)
    assert ck.metadata["step"] == 1 and torch.load(str(tmp_path / "cut.pt") + ".state",
                                                    weights_only=False)["step"] == 1
    train_codec(dataclasses.replace(cut, max_minutes=0, resume=True), on_log=lambda d: None)
    whole, resumed = _weights(tmp_path / "whole.pt"), _weights(tmp_path / "cut.pt")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
