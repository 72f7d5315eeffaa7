"""Detection and segmentation trained from ŷ: the commands end to end, and a detector that
overfits a handful of scenes (AP50 > 0.5)."""


import pytest

from pipeline.train.detect import DetectConfig, train_detection
from tests.train.scenes import scenes_dataset


@pytest.mark.slow
def test_a_detector_on_y_hat_overfits_a_handful_ofscenes_dataset(tmp_path):
    ds = scenes_dataset(tmp_path, train=4, val=1)
    cfg = DetectConfig(str(ds), "detect", epochs=50, batch_size=4, lr=0.02, window=8, workers=0,
                       val_split="train", eval_every=50)
    result = train_detection(cfg, log=lambda r: None)
    assert result["history"][-1]["ap50"] > 0.5
