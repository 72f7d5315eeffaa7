"""What the seed paper's setting costs: FLOPs of each stage, and GPU-hours at a stated speed.

The seed trains the codec jointly with a classifier (Eq. 6): 70 epochs of ImageNet at batch
256 for the task, with a reconstruction batch of 72 Open Images crops drawn beside every
task batch; then it converts the dataset and trains a classifier on ŷ. This module counts
the convolution and matrix FLOPs of each of those stages with the models this project
builds (torch's FlopCounterMode, forward; a training step is taken as 3× the forward: the
forward, and a backward of about twice its cost), and turns them into GPU-hours at a
sustained throughput the user states. Element-wise work (GDN's square roots, the entropy
models' likelihoods, BatchNorm) is not counted, nor is data loading: the figures are a floor
for a well-fed GPU, not a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from pipeline.codec.registry import CELL
from pipeline.errors import ConfigError

TRAIN_FACTOR = 3  # forward + backward ≈ 3 forwards


@dataclass(frozen=True)
class SeedSchedule:
    task_images: int = 1_281_167  # ImageNet-1k train
    convert_images: int = 1_331_167  # ImageNet-1k train + val
    joint_epochs: int = 70  # the seed: both tasks for 70 epochs
    task_batch: int = 256
    recon_batch: int = 72
    recon_patch: int = 256  # Open Images crops for the reconstruction term
    task_size: int = 224  # classification crops; ŷ of 14×14
    convert_pixels: int = 256 * 341  # the converter's default: shorter side 256 (ImageNet ≈ 4:3)
    downstream_epochs: int = 90  # the classifier trained on ŷ afterwards
    arch: str = "bmshj2018-hyperprior"
    N: int = 128  # CompressAI's bmshj2018-hyperprior, qualities 1–5
    M: int = 192
    head: str = "sresnet50"
    pixel_baseline: str = "resnet50"
    sustained_tflops: float = 40.0  # what one GPU actually sustains (FP32/TF32 training)

    def __post_init__(self):
        if self.sustained_tflops <= 0 or self.joint_epochs < 1 or self.downstream_epochs < 1:
            raise ConfigError("--sustained-tflops, --joint-epochs and --downstream-epochs must be positive")


def forward_gflops(module: torch.nn.Module, *shape: int) -> float:
    """Forward convolution/matmul GFLOPs of ``module`` on one input of ``shape``."""
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        module(torch.zeros(1, *shape))
    return fc.get_total_flops() / 1e9


def seed_cost(s: SeedSchedule = SeedSchedule()) -> dict:
    """Every stage's GFLOPs per image and its GPU-hours at ``s.sustained_tflops``."""
    from pipeline.codec.registry import get_architecture
    from pipeline.models.registry import create_model

    codec = get_architecture(s.arch).build(s.N, s.M)
    lat = s.task_size // CELL
    per_image = {
        # the whole codec (g_a, h_a, h_s, g_s) on one reconstruction crop
        "codec, reconstruction crop": forward_gflops(codec, 3, s.recon_patch, s.recon_patch),
        "g_a, task image": forward_gflops(codec.g_a, 3, s.task_size, s.task_size),
        f"{s.head} on ŷ": forward_gflops(create_model(s.head, s.M, 1000), s.M, lat, lat),
        f"{s.pixel_baseline} on pixels": forward_gflops(create_model(s.pixel_baseline, 3, 1000),
                                                        3, s.task_size, s.task_size),
        # converting: g_a and h_a give ŷ and ẑ; h_s gives the scales the coder needs
        "convert (g_a, h_a, h_s)": forward_gflops(
            torch.nn.Sequential(codec.g_a, codec.h_a), 3, 256, 320) * s.convert_pixels / (256 * 320)
        + forward_gflops(codec.h_s, s.N, 256 // 64, 320 // 64) * s.convert_pixels / (256 * 320),
    }
    steps = s.joint_epochs * -(-s.task_images // s.task_batch)
    task_image = per_image["g_a, task image"] + per_image[f"{s.head} on ŷ"]
    recon_image = per_image["codec, reconstruction crop"]
    joint_step = TRAIN_FACTOR * (s.recon_batch * recon_image + s.task_batch * task_image)
    stages = {
        "joint codec + task training (Eq. 6)": steps * joint_step,
        "convert the dataset": s.convert_images * per_image["convert (g_a, h_a, h_s)"],
        f"train {s.head} on ŷ": TRAIN_FACTOR * s.downstream_epochs * s.task_images
        * per_image[f"{s.head} on ŷ"],
        f"(baseline) train {s.pixel_baseline} on pixels": TRAIN_FACTOR * s.downstream_epochs
        * s.task_images * per_image[f"{s.pixel_baseline} on pixels"],
    }
    hours = {k: v * 1e9 / (s.sustained_tflops * 1e12) / 3600 for k, v in stages.items()}
    return {"schedule": asdict(s), "joint_steps": steps, "gflops_per_image": per_image,
            "pflops": {k: v / 1e6 for k, v in stages.items()}, "gpu_hours": hours}
