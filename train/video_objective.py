"""The flow-matching objective for the Lumina-Video family (`lumina.model.lumina_video.LuminaVideo`):
the image objective's interpolation and velocity target (lumina.flow), plus what only this family
takes per step: a patch entry (patch_size, f_patch_size) among the model's multi-scale entries and
a motion score per clip.

Each step trains one entry, drawn from the step's generator among those that can cut the batch's
latents (frames 1 or a multiple of f_patch_size, sides multiples of patch_size), so every entry
learns from the same data over a run. Motion scores come with the data (one number per clip, e.g.
from an optical-flow estimate); `drop_motion` replaces some by −1, the score the model reads as
"no motion conditioning" (its motion term is zeroed for negative scores), so sampling may guide on
motion as on captions.

This is the step only: `train.engine.fit` trains the Lumina-T2X families and does not yet drive
this family (its checkpoints, LoRA targets and data need their own plumbing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lumina import flow
from lumina.video_config import LuminaVideoConfig

from .config import ConfigError


def fitting_entries(config: LuminaVideoConfig, frames: int, height: int, width: int) -> list[tuple[int, int]]:
    """The (patch_size, f_patch_size) entries that can cut a (frames, height, width) latent."""
    return [(p, pf) for p, pf in config.patches if height % p == 0 and width % p == 0 and (frames == 1 or frames % pf == 0)]


def draw_entry(config: LuminaVideoConfig, shape: tuple[int, ...], generator: torch.Generator) -> tuple[int, int]:
    """One fitting entry for latents of `shape` (…, F, H, W), uniformly from `generator`; a
    ConfigError naming the sizes when none fits."""
    frames, height, width = (int(s) for s in shape[-3:])
    entries = fitting_entries(config, frames, height, width)
    if not entries:
        names = ", ".join(f"{pf}x{p}" for p, pf in config.patches)
        raise ConfigError(f"latents of {frames} frame(s) × {height}×{width} fit none of the model's patch entries ({names}, "
                          "f_patch x patch): use clip lengths whose latent frames are 1 or a multiple of f_patch and sizes "
                          "that are multiples of the patch size")
    return entries[int(torch.randint(len(entries), (1,), generator=generator))]


def drop_motion(scores: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    """The scores with each replaced by −1 (no motion conditioning) with `probability`."""
    dropped = torch.rand(scores.shape, generator=generator) < probability
    return scores.float().masked_fill(dropped.to(scores.device), -1.0)


def lumina_video_loss(
    model: torch.nn.Module, data: Tensor, noise: Tensor, t: Tensor, cap_feats: Tensor, cap_mask: Tensor,
    motion_score: Tensor, entry: tuple[int, int],
) -> Tensor:
    """MSE between the predicted and the true velocity (lumina.flow) of (B, C, F, H, W) latents
    through one patch entry (patch_size, f_patch_size), averaged per sample, then over the batch."""
    noise, t = noise.to(data.device, data.dtype), t.to(data.device)
    x_t = flow.interpolate(noise, data, t)
    target = flow.velocity_target(noise, data)
    pred = model(x_t, t, cap_feats, cap_mask, motion_score.to(data.device), entry[0], entry[1])
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, data.ndim))).mean()


__all__ = ["draw_entry", "drop_motion", "fitting_entries", "lumina_video_loss"]
