"""The one owner of Lumina's time convention, and every conversion to other conventions.

Lumina (official code, SiT): **t = 0 is noise, t = 1 is data**,
    x_t = t·x1 + (1 − t)·x0      (x0 noise, x1 data)
and the model predicts the velocity v = dx_t/dt = x1 − x0. Sampling integrates dx/dt = v from
t = 0 to t = 1. Other code uses sigma = 1 − t (ComfyUI, diffusers, SD3) and predicts −v; every
place that crosses to those conventions calls a function here and does no arithmetic of its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import LuminaInputError


def _bcast(t: Tensor | float, like: Tensor) -> Tensor | float:
    """Per-sample times (B,) → (B, 1, 1, …) so they broadcast over a latent."""
    if isinstance(t, Tensor) and t.ndim == 1 and like.ndim > 1:
        return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
    return t


# -- the interpolant and the training target ------------------------------------------------
def interpolate(noise: Tensor, data: Tensor, t: Tensor | float) -> Tensor:
    """x_t = t·data + (1 − t)·noise."""
    t = _bcast(t, data)
    return t * data + (1 - t) * noise


def velocity_target(noise: Tensor, data: Tensor) -> Tensor:
    """The flow-matching regression target, data − noise."""
    return data - noise


def denoised_from_velocity(x_t: Tensor, velocity: Tensor, t: Tensor | float) -> Tensor:
    """The data estimate x1 = x_t + (1 − t)·v (for previews and ComfyUI's `denoised`)."""
    return x_t + (1 - _bcast(t, x_t)) * velocity


def noise_from_velocity(x_t: Tensor, velocity: Tensor, t: Tensor | float) -> Tensor:
    """The noise estimate x0 = x_t − t·v."""
    return x_t - _bcast(t, x_t) * velocity


# -- sigma conventions (ComfyUI, diffusers, SD3) ---------------------------------------------
def sigma_from_t(t: Tensor | float) -> Tensor | float:
    """ComfyUI / diffusers flow sigma: 1 at pure noise, 0 at data."""
    return 1 - t


def t_from_sigma(sigma: Tensor | float) -> Tensor | float:
    return 1 - sigma


def comfy_output_from_velocity(velocity: Tensor) -> Tensor:
    """ComfyUI flow models predict noise − data; its `denoised = x − sigma·out` then equals
    `denoised_from_velocity`."""
    return -velocity


def velocity_from_comfy_output(output: Tensor) -> Tensor:
    return -output


def diffusers_timestep_from_t(t: Tensor | float, num_train_timesteps: int = 1000) -> Tensor | float:
    """diffusers' flow schedulers count timesteps as sigma·1000; its Lumina pipeline then feeds the
    model 1 − timestep/1000 (= our t) and negates the output (= our velocity)."""
    return sigma_from_t(t) * num_train_timesteps


def t_from_diffusers_timestep(timestep: Tensor | float, num_train_timesteps: int = 1000) -> Tensor | float:
    return t_from_sigma(timestep / num_train_timesteps)


# -- time shifts and grids ---------------------------------------------------------------------
def time_shift(t: Tensor, shift: float) -> Tensor:
    """Official sampling shift t / (t + s − s·t): s > 1 spends more steps near noise."""
    return t / (t + shift - shift * t)


def sigma_shift(sigma: Tensor, shift: float) -> Tensor:
    """The same shift in sigma form, s·σ / (1 + (s − 1)·σ) (SD3's formula)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def resolution_shift(width: int, height: int, base_shift: float = 1.0, base_size: int = 1024) -> float:
    """Shift that keeps the signal-to-noise ratio per image region constant across resolutions:
    base_shift · sqrt(pixels / base_size²) (Esser et al. 2024, SD3, §5.3.2)."""
    return base_shift * math.sqrt(width * height) / base_size


def sigmoid_time_grid(points: int, scale: float = 4.0) -> Tensor:
    """A sigmoid-shaped grid from 0 to 1: dense at both ends, sparse in the middle.

    Points u_i = linspace(−1, 1) are mapped through sigmoid(scale·u) and renormalised so the grid
    starts at exactly 0 and ends at exactly 1. This is our parameterisation of the idea behind
    Lumina-Next's sigmoid time discretisation (arXiv 2406.18583); the official repository has no
    code for it, and the paper's exact constants are not reproduced here.
    """
    u = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    s = torch.sigmoid(scale * u)
    return ((s - s[0]) / (s[-1] - s[0])).float()


SCHEDULES = ("shift", "uniform", "sigmoid")
STEP_CONVENTIONS = ("grid_points", "model_steps")


def check_grid(
    steps: int, schedule: str = "shift", shift: float = 1.0, convention: str = "grid_points", sigmoid_scale: float = 4.0
) -> None:
    """Raise a LuminaInputError naming the setting when `time_grid` cannot build this grid."""
    if convention not in STEP_CONVENTIONS:
        raise LuminaInputError(f"unknown step convention {convention!r}; choose one of {', '.join(STEP_CONVENTIONS)}")
    if schedule not in SCHEDULES:
        raise LuminaInputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if steps < (2 if convention == "grid_points" else 1):
        raise LuminaInputError(
            f"steps={steps} is too few: use steps ≥ 1 with step_convention='model_steps' or ≥ 2 with 'grid_points' "
            "(official: N grid points = N − 1 solver steps)"
        )
    if schedule == "shift" and not (shift > 0 and math.isfinite(shift)):
        raise LuminaInputError(f"shift={shift} must be positive (1 = no shift; the official demos use 4)")
    if schedule == "sigmoid" and not (sigmoid_scale > 0 and math.isfinite(sigmoid_scale)):
        raise LuminaInputError(f"sigmoid_scale={sigmoid_scale} must be positive (4 by default; larger = denser at both ends)")


def time_grid(
    steps: int, schedule: str = "shift", shift: float = 1.0, *, convention: str = "grid_points",
    sigmoid_scale: float = 4.0,
) -> Tensor:
    """The times at which a fixed-step solver lands, from 0 (noise) to 1 (data).

    convention "grid_points": `steps` points, steps − 1 intervals — the official scripts'
      `num_sampling_steps` (30 points = 29 Euler model calls).
    convention "model_steps": `steps` intervals (steps + 1 points), one model call per Euler step,
      as ComfyUI and diffusers count.
    """
    check_grid(steps, schedule, shift, convention, sigmoid_scale)
    points = steps if convention == "grid_points" else steps + 1
    if schedule == "sigmoid":
        return sigmoid_time_grid(points, sigmoid_scale)
    grid = torch.linspace(0, 1, points)
    return time_shift(grid, shift) if schedule == "shift" else grid


# -- timestep samplers for training ------------------------------------------------------------
T_SAMPLERS = ("uniform", "lognorm", "shift")


def sample_t(
    kind: str, batch: int, *, shift: float = 1.0, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Training times: "uniform" U(0,1); "lognorm" sigmoid(N(0,1)) (logit-normal);
    "shift" s·u/(1 + (s − 1)·u), the official `shift_s`, which pushes t toward data for s > 1."""
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    if kind == "lognorm":
        return torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    if kind == "shift":
        u = torch.rand(batch, generator=generator, device=device)
        return shift * u / (1 + (shift - 1) * u)
    raise ValueError(f"unknown timestep sampler {kind!r}; choose one of {T_SAMPLERS}")
