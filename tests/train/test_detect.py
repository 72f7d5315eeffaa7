"""Detection trained from ŷ (and pixels): a detector that overfits a handful of scenes
(AP50 > 0.5), and a resumed run that ends where an uninterrupted one does."""

import dataclasses

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.train.detect import DetectConfig, train_detection
from tests.train.scenes import scenes_dataset


@pytest.mark.slow
def test_a_detector_on_y_hat_overfits_a_handful_of_scenes(tmp_path):
    ds = scenes_dataset(tmp_path, train=4, val=1)
    cfg = DetectConfig(str(ds), "detect", epochs=50, batch_size=4, lr=0.02, window=8, workers=0,
                       val_split="train", eval_every=50)
    result = train_detection(cfg, log=lambda r: None)
    assert result["history"][-1]["ap50"] > 0.5


class _Crash(Exception):
    pass


# ŷ's epoch-end resume is the mid-epoch test's special case (below); its own run is slow
@pytest.mark.parametrize("pixels", [pytest.param(False, marks=pytest.mark.slow), True])
def test_a_resumed_detection_run_ends_with_the_uninterrupted_weights(tmp_path, pixels):
    ds = scenes_dataset(tmp_path, train=4, val=1)
    data = str(tmp_path / "voc") if pixels else str(ds)
    arch = "fasterrcnn-resnet18" if pixels else "fasterrcnn-sresnet18"

    def cfg(out, resume=False):
        return DetectConfig(data, "detect", arch=arch, epochs=2, batch_size=2, window=4, workers=0,
                            out=str(tmp_path / out), eval_every=2, pixels=pixels, resume=resume)

    whole = train_detection(cfg("whole"), log=lambda r: None)["model"].state_dict()

    def crash(epoch, batch, batches, loss):
        if epoch == 1:
            raise _Crash  # the process dies in epoch 1, after epoch 0's last.pt

    with pytest.raises(_Crash):
        train_detection(cfg("cut"), log=lambda r: None, on_batch=crash)
    seen = []
    resumed = train_detection(cfg("cut", resume=True), log=seen.append)["model"].state_dict()
    assert seen[0] == {"resumed": str(tmp_path / "cut" / "last.pt"), "epoch": 1, "batch": 0}
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    with pytest.raises(ConfigError, match="other batch_size"):
        train_detection(dataclasses.replace(cfg("cut", resume=True), batch_size=4), log=lambda r: None)


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_detection_and_segmentation_resume_mid_epoch_through_the_shared_engine(tmp_path, task):
    """Killed after a step inside epoch 0 with ``checkpoint_every=1``: the resumed run goes on
    from the exact next batch (each worker's partial batch dropped) and ends bit-identical."""
    ds = scenes_dataset(tmp_path, train=6, val=1)
    arch = "fasterrcnn-sresnet18" if task == "detect" else "deeplabv3-sresnet18"

    def cfg(out, **kw):
        return DetectConfig(str(ds), task, arch=arch, epochs=2, batch_size=2, window=4, workers=2,
                            out=str(tmp_path / out), eval_every=2, **kw)

    losses = []
    whole = train_detection(cfg("whole"), log=lambda r: None,
                            on_batch=lambda e, b, n, loss: losses.append(loss))
    per_epoch = len(losses) // 2
    assert per_epoch >= 2  # 6 samples over 2 workers of 3, batches of 2: one full batch each

    def crash(epoch, batch, batches, loss):
        assert batches == per_epoch
        if (epoch, batch) == (0, 1):
            raise _Crash

    with pytest.raises(_Crash):
        train_detection(cfg("cut", checkpoint_every=1), log=lambda r: None, on_batch=crash)
    again, seen = [], []
    resumed = train_detection(cfg("cut", checkpoint_every=1, resume=True), log=seen.append,
                              on_batch=lambda e, b, n, loss: again.append(loss))
    assert seen[0]["epoch"] == 0 and seen[0]["batch"] == 1
    assert again == losses[1:]
    a, b = whole["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(tmp_path / "cut" / "model.pt", weights_only=False)
    assert saved["task"] == task and len(saved["history"]) == 2


def test_a_detector_and_a_segmenter_start_from_a_classifiers_trunk(tmp_path):
    """The seed's protocol: --init-from a classifier on the same representation loads its trunk
    (and nothing of its head); one on another input is refused in one line."""
    from pipeline.models.registry import create_model
    from pipeline.models.transfer import trunk_of
    from pipeline.train.detect import DetectTask

    ds = scenes_dataset(tmp_path, train=2, val=1)
    M = 96
    clf = create_model("sresnet18", M, 7)
    torch.save({"task": "classify", "arch": "sresnet18", "state_dict": clf.state_dict()}, tmp_path / "clf.pt")
    for task, arch in (("detect", "fasterrcnn-sresnet18"), ("segment", "deeplabv3-sresnet18")):
        t = DetectTask(DetectConfig(str(ds), task, arch=arch, epochs=1, batch_size=2, window=4, workers=0,
                                    init_from=str(tmp_path / "clf.pt")))
        trunk, own = trunk_of(t.model).state_dict(), clf.state_dict()
        assert torch.equal(trunk["stem.layers.0.body.0.weight"], own["entry.layers.0.body.0.weight"])
        assert torch.equal(trunk["layer4.1.conv2.weight"], own["stages.3.1.conv2.weight"])
    pixels = create_model("resnet18", 3, 7)
    torch.save({"task": "classify", "arch": "resnet18", "state_dict": pixels.state_dict()},
               tmp_path / "px.pt")
    with pytest.raises(ConfigError, match="does not fit this trunk") as err:
        DetectTask(DetectConfig(str(ds), "detect", epochs=1, batch_size=2, window=4, workers=0,
                                init_from=str(tmp_path / "px.pt")))
    assert "\n" not in str(err.value)
