"""Networks on ŷ and their pixel baselines: sResNet / cResNet / ResNet, Faster R-CNN and
DeepLabV3 on either, one registry by name and task.

It may import the runtime codec's geometry (`pipeline.codec.registry.CELL`) and torchvision
only: no data, loader or training code.
"""
