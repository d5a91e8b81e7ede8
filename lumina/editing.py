"""Starting the flow from an image latent (img2img, high-resolution editing)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import LuminaInputError
from .flow import interpolate


def check_start_time(start_time: float) -> None:
    if not 0.0 <= start_time <= 1.0:
        raise LuminaInputError(
            f"start time λ={start_time} is outside [0, 1]; 0 starts from pure noise, 1 returns the image unchanged"
        )


def noisy_start(latent: Tensor, noise: Tensor, start_time: float) -> Tensor:
    """x_λ = λ·latent + (1 − λ)·noise: the point of the flow at time λ (λ = 1 is the latent itself)."""
    check_start_time(start_time)
    return interpolate(noise, latent, start_time)


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= 1.0:
        raise LuminaInputError(f"strength={strength} is outside [0, 1]")


def strength_start_index(strength: float, points: int) -> int:
    """Official img2img (`transport.py: ODE(strength)`): drop the first int(N·(1 − strength)) of
    N grid points; the solver starts at the first remaining time."""
    check_strength(strength)
    return int(points * (1 - strength))


def trim_grid(grid: Tensor, strength: float) -> Tensor:
    """The official img2img grid: `grid` without its first int(N·(1 − strength)) points."""
    return grid[strength_start_index(strength, len(grid)) :]


def normalize_channels(latent: Tensor, eps: float = 1e-6) -> Tensor:
    """Channel-wise latent normalisation (Lumina-T2X §3.4, style editing): each item's channels
    to zero mean and unit variance over their spatial positions."""
    dims = tuple(range(2, latent.ndim))
    mean = latent.mean(dim=dims, keepdim=True)
    std = latent.std(dim=dims, keepdim=True, unbiased=False)
    return (latent - mean) / (std + eps)


@dataclass(frozen=True, eq=False)
class ImageStart:
    """Where image-to-image sampling starts: the image `latent` (B, C, h, w) and either
    `start_time` λ (the Lumina-T2X paper's editing: x_λ = λ·latent + (1 − λ)·noise, the grid
    rescaled onto [λ, 1]; paper default 0.2) or `strength` (the official img2img script: drop the
    first int(N·(1 − strength)) grid points). `normalize`: channel-wise latent normalisation first."""

    latent: Tensor
    start_time: float | None = None
    strength: float | None = None
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.start_time is not None and self.strength is not None:
            raise LuminaInputError("give start_time (λ) or strength, not both")
        if self.start_time is None and self.strength is None:
            raise LuminaInputError("image-to-image needs start_time λ or strength besides the image latent")
        if self.start_time is not None:
            check_start_time(self.start_time)
        else:
            check_strength(self.strength)

    def begin(self, grid: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(the state at the start, the grid left to integrate) for a text-to-image `grid` and `noise`."""
        latent = self.latent.to(noise.device, torch.float32)
        if self.normalize:
            latent = normalize_channels(latent)
        if self.strength is not None:
            grid = trim_grid(grid, self.strength)
            lam = float(grid[0]) if len(grid) else 1.0
        else:
            lam = self.start_time
            grid = lam + (1 - lam) * grid if lam < 1.0 else grid[-1:]
        return noisy_start(latent, noise, lam), grid


__all__ = [
    "ImageStart", "noisy_start", "strength_start_index", "trim_grid", "normalize_channels", "check_start_time",
    "check_strength",
]
