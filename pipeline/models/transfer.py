"""The seed's transfer protocol: a detection or segmentation trunk started from a
classification model trained on the same representation ("we initialize the training with
ImageNet weights trained for the compressed representation").

A classifier's trunk (sResNet: ``entry`` and ``stages.0-3``; ResNet: ``conv1``, ``bn1`` and
``layer1-4``) is renamed to the detection trunk's (``stem``, ``layer1-4``); its head is left
out. Every trunk tensor must be there with its shape, or the load is refused in one line.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from pipeline.errors import ConfigError


def _trunk_name(key: str) -> str | None:
    """A classifier's key as the detection trunk names it (None: not part of the trunk)."""
    for old, new in (("entry.", "stem."), ("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"stages\.(\d)\.(.*)$", key)
    if m:
        return f"layer{int(m.group(1)) + 1}.{m.group(2)}"
    return key if key.startswith("layer") else None


def trunk_of(model: nn.Module) -> nn.Module:
    """The trunk (stem and four stages) of a detection or segmentation model."""
    if hasattr(model, "backbone"):
        return model.backbone.body
    if hasattr(model, "body"):
        return model.body
    raise ConfigError(f"{type(model).__name__} has no trunk to start from a classifier")


def load_trunk(model: nn.Module, path: str) -> int:
    """Start ``model``'s trunk from the classifier saved at ``path`` (a ``model.pt`` of
    `latents train classify`); returns the number of tensors loaded."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"--init-from {path}: cannot be read ({exc})") from None
    sd = saved.get("state_dict") if isinstance(saved, dict) else None
    if sd is None or saved.get("task", "classify") != "classify":
        raise ConfigError(f"--init-from {path} is not a classifier's model.pt (`latents train classify`)")
    renamed = {n: v for k, v in sd.items() if (n := _trunk_name(k)) is not None}
    trunk = trunk_of(model)
    own = trunk.state_dict()
    missing = [k for k in own if k not in renamed]
    wrong = [k for k in own if k in renamed and renamed[k].shape != own[k].shape]
    if missing or wrong:
        k = (wrong or missing)[0]
        why = (f"{k} is {tuple(renamed[k].shape)} there, {tuple(own[k].shape)} here" if wrong
               else f"it has no {k}")
        raise ConfigError(f"--init-from {path} ({saved.get('arch', '?')}) does not fit this trunk: {why}; "
                          "start from a classifier of the same depth on the same input (ŷ of the same M, "
                          "or pixels)")
    trunk.load_state_dict({k: renamed[k] for k in own})
    return len(own)
