"""Lumina-Video sampling: the official sample configs by name and the Euler flow sampler of
`generate.py` (linear interpolant x_t = t·x1 + (1 − t)·x0, t=0 noise, t=1 data, velocity model,
time grid linspace(0, 1, steps) shifted by t / (t + ts − ts·t)).

Every setting can be changed: `video_sample_settings("f24F96R960-MultiScale", cfg=7.0, steps=50)`.
`patch_comb`, `cfg` and `neg_motion` are time-switched values, (v0, (t1, v1), ...) → v_i from t_i on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from .conditioning import Conditioning, concat
from .editing import ImageStart
from .errors import LuminaInputError, LuminaNumericError
from .flow import time_shift as shift_times
from .memory import check_sampling_fits
from .model.lumina_video import TimeAware, guided_velocity, parse_patch_comb, time_aware_value
from .model.options import ForwardOptions
from .sampling import require_finite, seeded_noise
from .solvers import Callback, VelocityFn, solve

if TYPE_CHECKING:
    from .model.lumina_video import LuminaVideo
    from .video_config import LuminaVideoConfig


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

    def patch_entries(self) -> list[tuple[int, int]]:
        """Every (patch_size, f_patch_size) the patch schedule uses."""
        return [parse_patch_comb(v) for v in schedule_values(self.patch_comb)]

    def check_model(self, config: "LuminaVideoConfig") -> None:
        """Raise a LuminaInputError before sampling when the model lacks an entry the schedule uses."""
        for patch, f_patch in self.patch_entries():
            config.entry_key(patch, f_patch)


def schedule_values(value: TimeAware) -> list:
    """The values of a time-switched setting, in order: 'a' → ['a'], ('a', (0.1, 'b')) → ['a', 'b']."""
    if isinstance(value, (tuple, list)) and value and not isinstance(value[0], (tuple, list)):
        return [value[0]] + [v for _, v in value[1:]]
    return [value]


def parse_schedule(text: str, value: Callable[[str], Any] = str) -> TimeAware:
    """A time-switched setting written for a text field: '2x4; 0.03: 2x2; 0.125: 1x2' → ('2x4',
    (0.03, '2x2'), (0.125, '1x2')), i.e. 2x4 from t = 0, 2x2 from t = 0.03, 1x2 from t = 0.125;
    a single entry '1x2' → '1x2'. `value` converts each value (e.g. float)."""
    parts = [part.strip() for part in str(text).split(";") if part.strip()]
    if not parts:
        raise LuminaInputError("the schedule is empty; write a value, or 'v0; t1: v1; t2: v2' (times ascending in (0, 1))")
    try:
        first = value(parts[0])
        switches = []
        for part in parts[1:]:
            time, _, v = part.partition(":")
            if not _:
                raise ValueError(part)
            switches.append((float(time), value(v.strip())))
    except ValueError:
        raise LuminaInputError(
            f"schedule {text!r} cannot be read: write 'v0; t1: v1; t2: v2', e.g. '2x4; 0.03: 2x2; 0.125: 1x2'"
        ) from None
    times = [t for t, _ in switches]
    if any(not 0.0 < t < 1.0 for t in times) or times != sorted(set(times)):
        raise LuminaInputError(f"schedule {text!r}: the switch times must rise strictly inside (0, 1), got {times}")
    return (first, *switches) if switches else first


def format_schedule(value: TimeAware) -> str:
    """The text form `parse_schedule` reads."""
    if isinstance(value, (tuple, list)) and value and not isinstance(value[0], (tuple, list)):
        return "; ".join([str(value[0])] + [f"{t:g}: {v}" for t, v in value[1:]])
    return str(value)


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
    return shift_times(torch.linspace(0.0, 1.0, steps), time_shift)


def model_kwargs(settings: VideoSampleSettings, batch: int = 1, negative: bool = True) -> dict[str, Any]:
    """The official `forward_with_multi_cfg` keyword arguments for `batch` prompts and one negative
    set (none when `negative` is False: unguided)."""
    return {
        "motion_score": [settings.motion] * batch + ([settings.neg_motion] * batch if negative else []),
        "patch_comb": settings.patch_comb,
        "cfg_scale": [settings.cfg] if negative else [],
        "renorm_cfg": settings.renorm,
    }


def scaled_cfg(cfg: TimeAware, scale: float) -> TimeAware:
    """`cfg` with its first (t = 0) value replaced by `scale` and its switches kept: the official
    (20, (0.2, 0)) with scale 7 is (7, (0.2, 0)) — guidance 7 until t = 0.2, then none."""
    if isinstance(cfg, (tuple, list)) and cfg and isinstance(cfg[0], (int, float)):
        return (float(scale), *cfg[1:])
    return float(scale)


def video_velocity(
    model: "LuminaVideo", cond: Conditioning, uncond: Conditioning | None, settings: VideoSampleSettings,
    options: ForwardOptions | None = None,
) -> VelocityFn:
    """v(x, t) for a batch x (B, C, F, H, W): the official guided call of its B rows with one
    negative caption set (`uncond`; None = unguided), time-aware settings resolved at each t.
    One caption (batch 1) serves every row. The velocity is fp32."""
    prepared: dict[int, tuple[Tensor, Tensor, dict[str, Any]]] = {}

    def rows(b: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        if b not in prepared:  # built once per batch size: the caption batch and the official kwargs
            parts = [cond.repeat_to(b)] + ([] if uncond is None else [uncond.repeat_to(b)])
            caption = concat(parts)
            prepared[b] = caption.cap_feats, caption.cap_mask, model_kwargs(settings, b, uncond is not None)
        return prepared[b]

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        feats, mask, kw = rows(x.shape[0])
        t_rows = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1)[:1].expand(feats.shape[0])
        try:
            return guided_velocity(model, x.to(model.dtype), t_rows, feats, mask, kw["motion_score"], kw["patch_comb"],
                                   kw["cfg_scale"], kw["renorm_cfg"], options=options).float()
        except LuminaInputError:
            if bool(torch.isfinite(x).all()):
                raise
            raise LuminaNumericError(
                f"sampling reached NaN or infinite values before t={float(t_rows[0]):.4f}: the model produced them from "
                "finite inputs; its weights may overflow in their dtype (fp16: load in bf16 or fp32)"
            ) from None

    return velocity


def _explicit_grid(grid: Tensor) -> Tensor:
    grid = torch.as_tensor(grid, dtype=torch.float32).reshape(-1)
    if len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()) or float(grid[0]) < 0.0 or float(grid[-1]) > 1.0:
        raise LuminaInputError(f"the time grid must rise from t ≥ 0 to t ≤ 1 in at least 2 points, got {grid.tolist()[:8]}")
    return grid


def sample_video(
    model: "LuminaVideo", cond: Conditioning, uncond: Conditioning | None = None,
    latent_shape: Sequence[int] | None = None, settings: VideoSampleSettings | str = "f24F96R960", *,
    noise: Tensor | None = None, seed: int = 0, start: ImageStart | None = None, solver: str = "euler",
    grid: Tensor | None = None, options: ForwardOptions | None = None, callback: Callback | None = None,
    trajectory: bool = False,
) -> Tensor:
    """Solve Lumina-Video's flow ODE from noise (t = 0) to the data latent (t = 1), like the official
    `generate.py` (Euler over `time_grid(steps, time_shift)`, one negative caption set).

    `latent_shape` (B, C, F, H, W) or `noise` of that shape (default: `seeded_noise(shape, seed)`);
    `start`: video-to-video from a latent (`lumina.editing.ImageStart`, λ or strength). `solver`:
    any of `lumina.solvers.SOLVERS` (the official one is euler); `grid`: an explicit time grid
    instead of the settings' (steps, time_shift). Only the B positive rows are integrated (the
    official sampler also carries the negative rows, whose values it never reads). Returns the
    fp32 final latent, or with trajectory=True the (points, B, C, F, H, W) stack."""
    if isinstance(settings, str):
        settings = video_sample_settings(settings)
    if start is not None:
        latent_shape = tuple(start.latent.shape)
    elif noise is not None:
        latent_shape = tuple(noise.shape)
    if latent_shape is None or len(latent_shape) != 5:
        raise LuminaInputError(
            f"Lumina-Video samples (batch, {model.config.in_channels}, frames, height, width) latents; got "
            f"{None if latent_shape is None else tuple(latent_shape)} (give latent_shape, noise or start)"
        )
    device = model.t_embedder.mlp[0].weight.device
    noise = seeded_noise(latent_shape, seed) if noise is None else noise
    if tuple(noise.shape) != tuple(latent_shape):
        raise LuminaInputError(f"noise shape {tuple(noise.shape)} does not match the latent shape {tuple(latent_shape)}")
    x = noise.to(device, torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise LuminaInputError("noise contains NaN or infinite values")
    grid = time_grid(int(settings.steps), float(settings.time_shift)) if grid is None else _explicit_grid(grid)
    if start is not None:
        if not bool(torch.isfinite(start.latent).all()):
            raise LuminaInputError("the video-to-video start latent contains NaN or infinite values; check the VAE encode")
        x, grid = start.begin(grid, x)
        if len(grid) < 2:
            return x[None] if trajectory else x
    check_sampling_fits(  # before the run allocates: refuse what cannot fit, naming the largest size that does
        model, tuple(latent_shape), cfg_batch=uncond is not None, solver=solver,
        caption_tokens=max(cond.length, 0 if uncond is None else uncond.length),
        caption_padded=bool(uncond is not None and cond.length != uncond.length) or not bool(cond.cap_mask.all()),
    )
    velocity = video_velocity(model, cond.to(device), None if uncond is None else uncond.to(device), settings, options)
    with torch.inference_mode():
        out = solve(velocity, x, grid.to(device), solver, callback=callback, trajectory=trajectory)
    return require_finite(out)


__all__ = [
    "VideoSampleSettings", "SAMPLE_CONFIGS", "video_sample_settings", "time_grid", "model_kwargs", "scaled_cfg",
    "parse_schedule", "format_schedule", "schedule_values",
    "video_velocity", "sample_video",
]
