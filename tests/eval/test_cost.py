"""`latents eval cost`: FLOP counts that can be checked by hand, and stages that scale as they must."""

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.eval.cost import SeedSchedule, forward_gflops, seed_cost


def test_forward_gflops_of_a_convolution_is_the_hand_count():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
    assert forward_gflops(conv, 8, 10, 12) == pytest.approx(2 * 8 * 16 * 9 * 10 * 12 / 1e9)


def test_stages_scale_with_the_schedule():
    base = seed_cost(SeedSchedule(N=32, M=48, head="sresnet18", sustained_tflops=10))
    more = seed_cost(SeedSchedule(N=32, M=48, head="sresnet18", sustained_tflops=20, joint_epochs=140))
    joint, conv = "joint codec + task training (Eq. 6)", "convert the dataset"
    assert more["joint_steps"] == 2 * base["joint_steps"]
    # twice the work at twice the speed; the same conversion at twice the speed
    assert more["gpu_hours"][joint] == pytest.approx(base["gpu_hours"][joint])
    assert more["gpu_hours"][conv] == pytest.approx(base["gpu_hours"][conv] / 2)
    with pytest.raises(ConfigError):
        SeedSchedule(sustained_tflops=0)
