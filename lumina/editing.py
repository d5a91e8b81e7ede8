"""Starting the flow from an image latent (img2img, high-resolution editing)."""

from __future__ import annotations

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


def strength_start_index(strength: float, points: int) -> int:
    """Official img2img (`transport.py: ODE(strength)`): drop the first int(N·(1 − strength)) of
    N grid points; the solver starts at the first remaining time."""
    if not 0.0 <= strength <= 1.0:
        raise LuminaInputError(f"strength={strength} is outside [0, 1]")
    return int(points * (1 - strength))


def normalize_channels(latent: Tensor, eps: float = 1e-6) -> Tensor:
    """Channel-wise latent normalisation (Lumina-T2X §3.4, style editing): each item's channels
    to zero mean and unit variance over their spatial positions."""
    dims = tuple(range(2, latent.ndim))
    mean = latent.mean(dim=dims, keepdim=True)
    std = latent.std(dim=dims, keepdim=True, unbiased=False)
    return (latent - mean) / (std + eps)


__all__ = ["noisy_start", "strength_start_index", "normalize_channels", "check_start_time"]
