"""The flow-matching objective, built from lumina.flow (the one owner of the time convention)."""

from __future__ import annotations

import torch
from torch import Tensor

from lumina import flow
from lumina.model import LuminaDiT


def draw_noise_and_t(
    shape: tuple[int, ...], generator: torch.Generator, t_sampler: str = "uniform", t_shift: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Noise and times for a whole global batch from one generator, so every process (and a
    single-process run) draws the same numbers and takes its own slice."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise, flow.sample_t(t_sampler, shape[0], shift=t_shift, generator=generator)


def flow_matching_loss(
    model: LuminaDiT, data: Tensor | list[Tensor], noise: Tensor | list[Tensor], t: Tensor, cap_feats: Tensor, cap_mask: Tensor,
) -> Tensor:
    """MSE between the predicted and the true velocity (data − noise) at x_t = t·data + (1 − t)·noise.

    Like the official loss, the learn_sigma half of the output is never supervised: the model's
    forward returns only the velocity channels. The per-sample mean is averaged over the batch.
    data and noise may be lists of (C, H_i, W_i) tensors of different sizes (bucketed images):
    the model takes them as one padded sequence batch.
    """
    if not isinstance(data, Tensor):
        t = t.to(data[0].device)
        noise = [n.to(d.device, d.dtype) for n, d in zip(noise, data, strict=True)]
        x_t = [flow.interpolate(n, d, t[i]) for i, (n, d) in enumerate(zip(noise, data))]
        pred = model(x_t, t, cap_feats, cap_mask)
        per_item = [((p.float() - flow.velocity_target(n, d).float()) ** 2).mean() for p, n, d in zip(pred, noise, data)]
        return torch.stack(per_item).mean()
    noise, t = noise.to(data.device, data.dtype), t.to(data.device)
    x_t = flow.interpolate(noise, data, t)
    target = flow.velocity_target(noise, data)
    pred = model(x_t, t, cap_feats, cap_mask)
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, data.ndim))).mean()
