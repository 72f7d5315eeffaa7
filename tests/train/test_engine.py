"""The shared training engine: a diverging run stops with a clear error, not NaN epochs."""

import pytest
import torch

from pipeline.errors import TrainError
from pipeline.train.engine import RunOptions, Schedule, fit


class Regression:
    """The smallest engine task: least squares on fixed data, learning rate chosen by the test."""

    def __init__(self, lr: float, out):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.x, self.y = torch.randn(32, 4) * 10, torch.randn(32, 1)
        self.schedule = Schedule(epochs=3, lr=lr, weight_decay=0.0, warmup=1)
        self.run = RunOptions(str(out))
        self.steps_per_epoch, self.mid_epoch = 4, True
        self.config, self.resume_keys = {"lr": lr}, ("lr",)

    def batches(self, epoch, skip):
        return [(self.x[i : i + 8], self.y[i : i + 8]) for i in range(8 * skip, 32, 8)]

    def loss(self, net, batch):
        loss = torch.nn.functional.mse_loss(net(batch[0]), batch[1])
        return loss, {"n": 1, "loss": loss.item()}

    def summary(self, sums, seconds):
        return {"train_loss": sums["loss"] / sums["n"]}

    def evaluate(self, rank):
        return {}

    def saved(self):
        return {}


def test_a_run_that_diverges_stops_with_a_clear_error(tmp_path):
    r = fit(Regression(1e-4, tmp_path / "ok"), log=lambda rec: None)
    assert len(r.history) == 3 and all(h["train_loss"] == h["train_loss"] for h in r.history)
    with pytest.raises(TrainError, match=r"the run diverged; lower --lr \(it is 1000.0\)"):
        fit(Regression(1e3, tmp_path / "bad"), log=lambda rec: None)
