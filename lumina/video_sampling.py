"""Lumina-Video sampling: the official sample configs by name and the Euler flow sampler of
`generate.py` (linear interpolant x_t = t·x1 + (1 − t)·x0, t=0 noise, t=1 data, velocity model,
time grid linspace(0, 1, steps) shifted by t / (t + ts − ts·t)).

Every setting can be changed: `video_sample_settings("f24F96R960-MultiScale", cfg=7.0, steps=50)`.
`patch_comb`, `cfg` and `neg_motion` are time-switched values, (v0, (t1, v1), ...) → v_i from t_i on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from .errors import LuminaInputError
from .model.lumina_video import TimeAware, guided_velocity, parse_patch_comb, time_aware_value

if TYPE_CHECKING:
    from .model.lumina_video import LuminaVideo


@dataclass(frozen=True)
class VideoSampleSettings:
    """One official sample config (configs/sample/__init__.py), field for field:
    P → patch_comb, step → steps, ts → time_shift, renorm, cfg, motion, negMotion → neg_motion.

    steps counts time-grid points (steps − 1 model evaluations), as the official sampler does.
    renorm ≤ 0 turns renormalisation off."""

    patch_comb: TimeAware = "1x2"
    steps: int = 70
    time_shift: float = 24.0
    renorm: float = 2.0
    cfg: TimeAware = (20.0, (0.2, 0.0))
    motion: TimeAware = 6.0
    neg_motion: TimeAware = (2.0, (0.05, 6.0))

    def __post_init__(self) -> None:
        if int(self.steps) < 2:
            raise LuminaInputError(f"steps={self.steps}: the time grid needs at least 2 points")
        if not (self.time_shift > 0):
            raise LuminaInputError(f"time_shift={self.time_shift} must be positive (1 = no shift)")
        for name in ("patch_comb", "cfg", "motion", "neg_motion"):  # resolve once to validate the form
            value = time_aware_value(getattr(self, name), 0.0)
            if name == "patch_comb":
                parse_patch_comb(value)

    def with_(self, **changes: Any) -> "VideoSampleSettings":
        return replace(self, **changes)


SAMPLE_CONFIGS: dict[str, VideoSampleSettings] = {
    "f24F96R960": VideoSampleSettings("1x2", 70, 24.0, 2.0, (20.0, (0.2, 0.0)), 6.0, (2.0, (0.05, 6.0))),
    "f24F96R960-MultiScale": VideoSampleSettings(
        ("2x4", (0.03, "2x2"), (0.125, "1x2")), 70, 24.0, 2.0, (20.0, (0.2, 0.0)), 6.0, (2.0, (0.05, 6.0))
    ),
    "f16F64R512": VideoSampleSettings("1x2", 70, 8.0, -1.0, (12.0, (0.4, 0.0)), 6.0, (2.0, (0.05, 6.0))),
    "f16F64R512-MultiScale": VideoSampleSettings(
        ("2x4", (0.075, "2x2"), (0.3, "1x2")), 70, 8.0, -1.0, (12.0, (0.4, 0.0)), 6.0, (2.0, (0.05, 6.0))
    ),
}


def video_sample_settings(name: str = "f24F96R960", **changes: Any) -> VideoSampleSettings:
    """An official sample config by name, with any field changed."""
    if name not in SAMPLE_CONFIGS:
        raise LuminaInputError(f"unknown Lumina-Video sample config {name!r}; pick one of {', '.join(SAMPLE_CONFIGS)}")
    known = {f.name for f in fields(VideoSampleSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise LuminaInputError(f"unknown sample settings {unknown}; settable: {sorted(known)}")
    return replace(SAMPLE_CONFIGS[name], **changes)


def time_grid(steps: int, time_shift: float) -> Tensor:
    """fp32 official grid: linspace(0, 1, steps) then t / (t + s − s·t)."""
    t = torch.linspace(0.0, 1.0, steps)
    return t / (t + time_shift - time_shift * t)


def model_kwargs(settings: VideoSampleSettings, batch: int = 1) -> dict[str, Any]:
    """The official `forward_with_multi_cfg` keyword arguments for `batch` prompts and one negative set."""
    return {
        "motion_score": [settings.motion] * batch + [settings.neg_motion] * batch,
        "patch_comb": settings.patch_comb,
        "cfg_scale": [settings.cfg],
        "renorm_cfg": settings.renorm,
    }


def sample_video(
    model: "LuminaVideo", noise: Tensor, cap_feats: Tensor, cap_mask: Tensor, neg_cap_feats: Tensor, neg_cap_mask: Tensor,
    settings: VideoSampleSettings | str = "f24F96R960", *, callback: Callable[[int, float, Tensor], None] | None = None,
    trajectory: bool = False,
) -> Tensor:
    """Euler-integrate noise (B, C, F, H, W) at t=0 to the data latent at t=1 with the guided
    velocity (one negative caption set). Only the B positive rows are integrated (the official
    sampler also carries the negative rows, whose values it never reads). Returns the final latent,
    or with trajectory=True a (steps, B, C, F, H, W) stack of every grid point."""
    if isinstance(settings, str):
        settings = video_sample_settings(settings)
    b = noise.shape[0]
    if cap_feats.shape[0] != b or neg_cap_feats.shape[0] != b:
        raise LuminaInputError(f"{b} noise rows need {b} positive and {b} negative caption rows")
    if cap_feats.shape[1] != neg_cap_feats.shape[1]:  # one padded caption batch
        width = max(cap_feats.shape[1], neg_cap_feats.shape[1])
        pad = lambda f, m: (torch.nn.functional.pad(f, (0, 0, 0, width - f.shape[1])),  # noqa: E731
                            torch.nn.functional.pad(m, (0, width - m.shape[1])))
        (cap_feats, cap_mask), (neg_cap_feats, neg_cap_mask) = pad(cap_feats, cap_mask), pad(neg_cap_feats, neg_cap_mask)
    feats = torch.cat([cap_feats, neg_cap_feats])
    mask = torch.cat([cap_mask, neg_cap_mask])
    kwargs = model_kwargs(settings, b)
    grid = time_grid(int(settings.steps), float(settings.time_shift))
    x = noise.float()
    states = [x]
    for i, (t0, t1) in enumerate(zip(grid[:-1].tolist(), grid[1:].tolist())):
        t = torch.full((2 * b,), t0, dtype=torch.float32, device=x.device)
        v = guided_velocity(model, x.to(noise.dtype), t, feats, mask, kwargs["motion_score"], kwargs["patch_comb"],
                            kwargs["cfg_scale"], kwargs["renorm_cfg"]).float()
        x = x + (grid[i + 1] - grid[i]).item() * v
        if callback is not None:
            callback(i, t0, x)
        states.append(x)
    return torch.stack(states) if trajectory else x


__all__ = [
    "VideoSampleSettings", "SAMPLE_CONFIGS", "video_sample_settings", "time_grid", "model_kwargs", "sample_video",
]
