"""Codec fingerprint: sha256 over everything that decides how a bitstream decodes."""

from __future__ import annotations

import hashlib

import torch

_DOMAIN = b"latent-shards/codec-fingerprint/1\n"


def codec_fingerprint(
    arch: str,
    N: int,
    M: int,
    state_dict: dict[str, torch.Tensor],
    coder: str,
    container_version: int,
) -> str:
    """Hex sha256 over the architecture, every state-dict tensor, the coder and the container.

    The state dict must already hold the entropy models' CDF tables (`update(force=True)`
    ran when the checkpoint was made): they decide the bitstream as much as the weights do.
    Library versions are deliberately left out, so a patch upgrade does not orphan datasets.
    """
    h = hashlib.sha256(_DOMAIN)
    h.update(f"arch={arch};N={N};M={M};coder={coder};container={container_version}\n".encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
