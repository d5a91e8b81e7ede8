"""The settings of one sampling run as one validated object (defaults: the official Lumina-T2I demo)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from torch import Tensor

from .errors import LuminaInputError
from .flow import check_grid, time_grid
from .guidance import CFG_MODES
from .solvers import EVALS_PER_STEP, SOLVERS


@dataclass(frozen=True)
class SamplingSettings:
    """steps: grid points (step_convention "grid_points", the official count: N points = N − 1
    solver steps) or solver steps ("model_steps"); solver: euler, midpoint, heun, rk4, dopri5;
    schedule: shift (official, `shift`), uniform or sigmoid (`sigmoid_scale`); cfg and cfg_mode
    (official: channels 0–2 guided, or standard); atol / rtol: dopri5's tolerances.
    Lumina-Next's demo uses solver="midpoint"."""

    steps: int = 30
    solver: str = "euler"
    schedule: str = "shift"
    shift: float = 4.0
    sigmoid_scale: float = 4.0
    step_convention: str = "grid_points"
    cfg: float = 4.0
    cfg_mode: str = "official"
    atol: float = 1e-6
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise LuminaInputError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.cfg_mode not in CFG_MODES:
            raise LuminaInputError(f"unknown cfg mode {self.cfg_mode!r}; choose one of {', '.join(CFG_MODES)}")
        check_grid(self.steps, self.schedule, self.shift, self.step_convention, self.sigmoid_scale)
        if not math.isfinite(self.cfg):
            raise LuminaInputError(f"cfg={self.cfg} is not a finite number; use 1 for no guidance, 4 for the official default")
        if self.cfg < 0:
            raise LuminaInputError(f"cfg={self.cfg} is negative; use 1 for no guidance, 4 for the official default")
        if not (self.atol > 0 and self.rtol > 0):
            raise LuminaInputError(f"dopri5 tolerances atol={self.atol}, rtol={self.rtol} must be positive")

    @classmethod
    def of(cls, settings: "SamplingSettings | None" = None, **changes) -> "SamplingSettings":
        """`settings` (or the defaults) with `changes`; an unknown name is an error naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown sampling setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
        return replace(settings or cls(), **changes)

    def time_grid(self) -> Tensor:
        return time_grid(self.steps, self.schedule, self.shift, convention=self.step_convention, sigmoid_scale=self.sigmoid_scale)

    def model_calls(self, grid_points: int) -> int:
        """Model evaluations of a fixed-step solver over `grid_points` points."""
        return (grid_points - 1) * EVALS_PER_STEP[self.solver]
