"""ODE solvers for dx/dt = v(x, t), as small pure functions over a velocity callable.

Fixed-step solvers land on every point of a time grid and perform the same arithmetic as
torchdiffeq's fixed-grid methods, which the official sampler calls, so trajectories match it.
dopri5 is adaptive and runs through torchdiffeq itself. A callback sees every step and may stop
the run by raising (ComfyUI's interrupt does) or by returning True.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .flow import denoised_from_velocity

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x, t as a 0-d tensor) → velocity


@dataclass
class StepInfo:
    """What a callback sees after each solver step."""

    step: int  # 1-based number of the step just finished
    total: int  # number of steps (for dopri5: output intervals)
    t: float  # time reached
    x: Tensor  # state at t
    denoised: Tensor | None  # data estimate x + (1 − t0)·v at the step's start (for previews)


Callback = Callable[[StepInfo], Optional[bool]]


class SamplingInterrupted(RuntimeError):
    """Raised when a callback returns True: sampling stopped before reaching t = 1."""


_ONE_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3


def euler_step(v: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> tuple[Tensor, Tensor]:
    k1 = v(x, t0)
    return x + (t1 - t0) * k1, k1


def midpoint_step(v: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> tuple[Tensor, Tensor]:
    dt = t1 - t0
    half = 0.5 * dt
    k1 = v(x, t0)
    return x + dt * v(x + k1 * half, t0 + half), k1


def heun_step(v: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> tuple[Tensor, Tensor]:
    """Heun's trapezoidal rule (second order)."""
    dt = t1 - t0
    k1 = v(x, t0)
    k2 = v(x + dt * k1, t1)
    return x + dt * 0.5 * (k1 + k2), k1


def rk4_step(v: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> tuple[Tensor, Tensor]:
    """Kutta's 3/8 rule, the fourth-order method torchdiffeq (and so the official code) calls rk4."""
    dt = t1 - t0
    k1 = v(x, t0)
    k2 = v(x + dt * k1 * _ONE_THIRD, t0 + dt * _ONE_THIRD)
    k3 = v(x + dt * (k2 - k1 * _ONE_THIRD), t0 + dt * _TWO_THIRDS)
    k4 = v(x + dt * (k1 - k2 + k3), t1)
    return x + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125, k1


FIXED_STEP = {"euler": euler_step, "midpoint": midpoint_step, "heun": heun_step, "rk4": rk4_step}
SOLVERS = (*FIXED_STEP, "dopri5")
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def _report(callback: Callback | None, info: StepInfo) -> None:
    if callback is not None and callback(info):
        raise SamplingInterrupted(f"sampling stopped by the callback at step {info.step}/{info.total} (t={info.t:.4f})")


def solve_fixed(
    v: VelocityFn, x: Tensor, grid: Tensor, solver: str = "euler", *, callback: Callback | None = None,
    trajectory: bool = False,
) -> Tensor:
    """Integrate from grid[0] to grid[-1]; returns the final state, or every grid point's state."""
    step = FIXED_STEP[solver]
    states = [x] if trajectory else None
    total = len(grid) - 1
    for i in range(total):
        t0, t1 = grid[i], grid[i + 1]
        x_prev = x
        x, k1 = step(v, x, t0, t1)
        if states is not None:
            states.append(x)
        if callback is not None:
            _report(callback, StepInfo(i + 1, total, float(t1), x, denoised_from_velocity(x_prev, k1, t0)))
    return torch.stack(states) if states is not None else x


def solve_dopri5(
    v: VelocityFn, x: Tensor, grid: Tensor, *, atol: float = 1e-6, rtol: float = 1e-3,
    callback: Callback | None = None, trajectory: bool = False,
) -> Tensor:
    """Adaptive Dormand–Prince through torchdiffeq; `grid` only sets the reported points."""
    from torchdiffeq import odeint

    total = len(grid) - 1
    evaluations = 0

    def f(t: Tensor, state: Tensor) -> Tensor:
        nonlocal evaluations
        evaluations += 1
        out = v(state, t)
        if callback is not None:  # adaptive: report (and allow stopping) at every evaluation
            progress = float((t - grid[0]) / (grid[-1] - grid[0]))
            _report(callback, StepInfo(min(total, int(progress * total)), total, float(t), state, None))
        return out

    # one-element lists, as the official code passes them: torchdiffeq then does its error-ratio and
    # first-step arithmetic in fp64, so our step sizes are the official ones to the bit
    states = odeint(f, x, grid.to(x.device), method="dopri5", atol=[atol], rtol=[rtol])
    return states if trajectory else states[-1]


def solve(
    v: VelocityFn, x: Tensor, grid: Tensor, solver: str = "euler", *, atol: float = 1e-6, rtol: float = 1e-3,
    callback: Callback | None = None, trajectory: bool = False,
) -> Tensor:
    """Dispatch by solver name: euler, midpoint, heun, rk4 (3/8 rule) or dopri5."""
    if solver == "dopri5":
        return solve_dopri5(v, x, grid, atol=atol, rtol=rtol, callback=callback, trajectory=trajectory)
    if solver not in FIXED_STEP:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    return solve_fixed(v, x, grid, solver, callback=callback, trajectory=trajectory)


__all__ = [
    "VelocityFn", "StepInfo", "Callback", "SamplingInterrupted", "solve", "solve_fixed", "solve_dopri5",
    "euler_step", "midpoint_step", "heun_step", "rk4_step", "SOLVERS", "EVALS_PER_STEP",
]
