"""Classifier-free guidance combinators over conditional and unconditional velocities."""

from __future__ import annotations

import torch
from torch import Tensor

CFG_MODES = ("official", "standard")
OFFICIAL_GUIDED_CHANNELS = 3


def standard_cfg(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """v_u + s·(v_c − v_u) on every channel."""
    return v_uncond + scale * (v_cond - v_uncond)


def official_cfg(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """The official `forward_with_cfg`: guidance on latent channels 0–2 only; channel 3 (and any
    beyond) keeps the conditional prediction unguided.

    The official code splits the output as `eps, rest = out[:, :3], out[:, 3:]` — inherited from
    DiT's ImageNet code, where the split separated the 3 "eps" channels from learned variance —
    so with 4-channel SDXL latents the fourth channel is never guided. Reproducing it is what makes
    our images identical to the official demo; `standard_cfg` is the textbook rule.
    """
    k = OFFICIAL_GUIDED_CHANNELS
    guided = v_uncond[:, :k] + scale * (v_cond[:, :k] - v_uncond[:, :k])
    return torch.cat([guided, v_cond[:, k:]], dim=1)


def combine(v_cond: Tensor, v_uncond: Tensor, scale: float, mode: str = "official") -> Tensor:
    if mode == "official":
        return official_cfg(v_cond, v_uncond, scale)
    if mode == "standard":
        return standard_cfg(v_cond, v_uncond, scale)
    raise ValueError(f"unknown cfg mode {mode!r}; choose one of {CFG_MODES}")
