"""The flow-matching objective, built from lumina.flow (the one owner of the time convention)."""

from __future__ import annotations

import torch
from torch import Tensor

from lumina import flow
from lumina.model import LuminaDiT


def flow_matching_loss(
    model: LuminaDiT, data: Tensor, cap_feats: Tensor, cap_mask: Tensor, generator: torch.Generator,
    t_sampler: str = "uniform", t_shift: float = 1.0,
) -> Tensor:
    """MSE between the predicted and the true velocity (data − noise) at x_t = t·data + (1 − t)·noise.

    Like the official loss, the learn_sigma half of the output is never supervised: the model's
    forward returns only the velocity channels. The per-sample mean is averaged over the batch.
    """
    b = data.shape[0]
    noise = torch.randn(data.shape, generator=generator, dtype=torch.float32).to(data.device, data.dtype)
    t = flow.sample_t(t_sampler, b, shift=t_shift, generator=generator).to(data.device)
    x_t = flow.interpolate(noise, data, t)
    target = flow.velocity_target(noise, data)
    pred = model(x_t, t, cap_feats, cap_mask)
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, data.ndim))).mean()
