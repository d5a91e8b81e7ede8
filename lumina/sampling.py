"""`lumina.sample`: text-to-image and image-to-image sampling as the official scripts do it.

The pieces are separate and reusable: a guided velocity callable (one batched forward for the
conditional and unconditional halves), a time grid (lumina.flow), a solver (lumina.solvers).
Nodes and the trainer's validation both call `sample`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from .conditioning import Conditioning, concat
from .editing import check_start_time, normalize_channels, noisy_start, strength_start_index
from .errors import LuminaInputError
from .features.region_adaptive import RegionAdaptive, RegionAdaptiveRun
from .flow import STEP_CONVENTIONS, SCHEDULES, time_grid
from .guidance import CFG_MODES, OFFICIAL_GUIDED_CHANNELS, combine
from .model import ForwardOptions, LuminaDiT
from .model.options import DEFAULT_OPTIONS
from .solvers import EVALS_PER_STEP, SOLVERS, Callback, StepInfo, VelocityFn, solve


def seeded_noise(shape: Sequence[int], seed: int) -> Tensor:
    """fp32 CPU `torch.randn` after seeding, like the official scripts, so one seed gives one
    image on every device. Item 0 equals the official [1, C, h, w] draw."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def guided_velocity(
    model: LuminaDiT, cond: Conditioning, uncond: Conditioning | None = None, cfg: float = 4.0,
    cfg_mode: str = "official", options: ForwardOptions | None = None, *, paired: bool = False,
) -> VelocityFn:
    """v(x, t) for a batch x: conditional and unconditional rows in one forward, then CFG.

    Like the official `forward_with_cfg`, both halves see the same latent x; the returned
    velocity is fp32 whatever the model's dtype.

    paired (official CFG only): the state is the official [x; x_u] pair. Both rows get the guided
    channels 0–2; x_u's channel 3 follows the unconditional prediction and is never fed back.
    Row 0 does not depend on x_u, so only an adaptive solver, whose error norm spans both rows,
    needs the pair to pick the official step sizes.

    Item-level regional prompts and shared attention in `options` are mapped onto the model
    batch here: regions to the conditional rows, shared attention within each half.
    """
    unguided = uncond is None or cfg == 1.0
    prepared: dict[int, tuple[Conditioning, ForwardOptions | None]] = {}  # per latent batch size, built once

    def batched(b: int) -> tuple[Conditioning, ForwardOptions | None]:
        if b not in prepared:
            caption = cond.repeat_to(b) if unguided else concat([cond.repeat_to(b), uncond.repeat_to(b)])
            prepared[b] = caption, _per_call_features(options, b, groups=1 if unguided else 2)
        return prepared[b]

    if unguided:
        def velocity(x: Tensor, t: Tensor) -> Tensor:
            c, opts = batched(x.shape[0])
            return model(x, t.expand(x.shape[0]), c.cap_feats, c.cap_mask, opts).float()

        return velocity

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0] // 2 if paired else x.shape[0]
        half = x[:b]
        both, opts = batched(b)
        out = model(torch.cat([half, half]), t.expand(2 * b), both.cap_feats, both.cap_mask, opts).float()
        v = combine(out[:b], out[b:], cfg, cfg_mode)
        if not paired:
            return v
        k = OFFICIAL_GUIDED_CHANNELS
        return torch.cat([v, torch.cat([v[:, :k], out[b:, k:]], dim=1)])

    return guided


def _check_settings(
    steps: int, solver: str, schedule: str, step_convention: str, cfg: float, cfg_mode: str, shift: float
) -> None:
    if solver not in SOLVERS:
        raise LuminaInputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if schedule not in SCHEDULES:
        raise LuminaInputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step_convention not in STEP_CONVENTIONS:
        raise LuminaInputError(f"unknown step convention {step_convention!r}; choose one of {', '.join(STEP_CONVENTIONS)}")
    if cfg_mode not in CFG_MODES:
        raise LuminaInputError(f"unknown cfg mode {cfg_mode!r}; choose one of {', '.join(CFG_MODES)}")
    if steps < 1 or (step_convention == "grid_points" and steps < 2):
        raise LuminaInputError(
            f"steps={steps} is too few: use steps ≥ 1 with step_convention='model_steps' or ≥ 2 with 'grid_points' "
            "(official: N grid points = N − 1 solver steps)"
        )
    if cfg < 0:
        raise LuminaInputError(f"cfg={cfg} is negative; use 1 for no guidance, 4 for the official default")
    if schedule == "shift" and not shift > 0:
        raise LuminaInputError(f"shift={shift} must be positive (1 = no shift; the official demos use 4)")


def _check_shape(model: LuminaDiT, shape: Sequence[int]) -> None:
    c = model.config
    if len(shape) != 4 or shape[1] != c.in_channels or shape[2] % c.patch_size or shape[3] % c.patch_size or 0 in shape:
        px = c.patch_size * c.vae_downsample
        raise LuminaInputError(
            f"latent shape {tuple(shape)} cannot be sampled by this model: it needs (batch, {c.in_channels}, h, w) "
            f"with h and w multiples of {c.patch_size} (images whose sides are multiples of {px} px)"
        )


def sample(
    model: LuminaDiT,
    cond: Conditioning,
    uncond: Conditioning | None = None,
    latent_shape: Sequence[int] | None = None,
    *,
    x_start: Tensor | None = None,
    noise: Tensor | None = None,
    steps: int = 30,
    solver: str = "euler",
    schedule: str = "shift",
    shift: float = 4.0,
    sigmoid_scale: float = 4.0,
    step_convention: str = "grid_points",
    cfg: float = 4.0,
    cfg_mode: str = "official",
    options: ForwardOptions | None = None,
    start_time: float | None = None,
    strength: float | None = None,
    normalize_start: bool = False,
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    callback: Callback | None = None,
    trajectory: bool = False,
    region_adaptive: RegionAdaptive | None = None,
) -> Tensor:
    """Solve the flow ODE from noise (t = 0) — or from an image latent part-way — to data (t = 1).

    Text-to-image: give `latent_shape` (B, C, h, w). Image-to-image: give `x_start` (the VAE latent)
    and either `start_time` λ (the Lumina-T2X paper's editing: x_λ = λ·latent + (1 − λ)·noise, the
    grid rescaled onto [λ, 1]) or `strength` (the official img2img script's mapping: drop the first
    int(N·(1 − strength)) grid points). `normalize_start` normalises the latent per channel first.

    Defaults are the official Lumina-T2I demo's (euler, 30 grid points, shift 4, cfg 4, official
    CFG); Lumina-Next's demo uses solver="midpoint". Returns the final latent in fp32, or with
    `trajectory` the state at every grid point (B stacked along a new first axis).

    `region_adaptive` (fixed-step solvers): Region-Adaptive Sampling, which recomputes
    only the patches in the model's focus at most model calls (lumina.features.region_adaptive).
    """
    _check_settings(steps, solver, schedule, step_convention, cfg, cfg_mode, shift)
    if schedule == "sigmoid" and not sigmoid_scale > 0:
        raise LuminaInputError(f"sigmoid_scale={sigmoid_scale} must be positive (4 by default; larger = denser at both ends)")
    if start_time is not None and strength is not None:
        raise LuminaInputError("give start_time (λ) or strength, not both")
    if (start_time is not None or strength is not None) != (x_start is not None):
        raise LuminaInputError(
            "image-to-image needs both x_start (the image latent) and start_time λ or strength; "
            "text-to-image needs neither"
        )
    if x_start is not None:
        latent_shape = tuple(x_start.shape)
    if latent_shape is None:
        raise LuminaInputError("give latent_shape (batch, channels, h, w) or x_start")
    _check_shape(model, latent_shape)
    if start_time is not None:
        check_start_time(start_time)

    device = model.x_embedder.weight.device
    if noise is None:
        noise = seeded_noise(latent_shape, seed)
    elif tuple(noise.shape) != tuple(latent_shape):
        raise LuminaInputError(f"noise shape {tuple(noise.shape)} does not match the latent shape {tuple(latent_shape)}")
    noise = noise.to(device, torch.float32)

    grid = time_grid(steps, schedule, shift, convention=step_convention, sigmoid_scale=sigmoid_scale)
    x = noise
    if x_start is not None:
        latent = x_start.to(device, torch.float32)
        if normalize_start:
            latent = normalize_channels(latent)
        if strength is not None:
            grid = grid[strength_start_index(strength, len(grid)) :]
            lam = float(grid[0]) if len(grid) else 1.0
        else:
            lam = start_time
            grid = lam + (1 - lam) * grid if lam < 1.0 else grid[-1:]
        x = noisy_start(latent, noise, lam)
        if len(grid) < 2:  # nothing left to integrate: λ = 1 or strength 0 returns the latent
            return x[None] if trajectory else x

    ras = None
    if region_adaptive is not None and region_adaptive.enabled:
        _check_region_adaptive(solver)
        calls, p = (len(grid) - 1) * EVALS_PER_STEP[solver], model.config.patch_size
        skips = region_adaptive.skip_counts((latent_shape[2] // p) * (latent_shape[3] // p), calls)  # bad ramps fail here
        ras = RegionAdaptiveRun(region_adaptive, p, skips)
        options = replace(options or DEFAULT_OPTIONS, sparse=ras.tokens)
    guided = uncond is not None and cfg != 1.0
    paired = guided and cfg_mode == "official" and solver == "dopri5"
    velocity = guided_velocity(
        model, cond.to(device), None if uncond is None else uncond.to(device), cfg, cfg_mode, options, paired=paired
    )
    if ras is not None:
        velocity = ras.wrap(velocity)
    b = x.shape[0]
    if paired:
        x = torch.cat([x, x])
        callback = _first_rows(callback, b)
    with torch.inference_mode():
        out = solve(velocity, x, grid.to(device), solver, atol=atol, rtol=rtol, callback=callback, trajectory=trajectory)
    return out[:, :b] if trajectory else out[:b]


def _check_region_adaptive(solver: str) -> None:
    if solver == "dopri5":
        raise LuminaInputError(
            "region-adaptive sampling needs a fixed-step solver (euler, midpoint, heun, rk4): dopri5 rejects "
            "and retries steps, so reused velocities would be out of date"
        )


def _per_call_features(options: ForwardOptions | None, batch: int, groups: int) -> ForwardOptions | None:
    """Map item-level regional prompts and shared attention onto the model batch: under CFG it is
    [conditional rows; unconditional rows], and regions apply to the conditional rows only."""
    if options is None:
        return None
    changes = {}
    if options.regions is not None and options.regions.rows is None:
        changes["regions"] = options.regions.with_rows(tuple(range(batch)))
    if options.shared_attention is not None and options.shared_attention.pairs is None:
        changes["shared_attention"] = options.shared_attention.resolve(batch, groups)
    return replace(options, **changes) if changes else options


def _first_rows(callback: Callback | None, rows: int) -> Callback | None:
    """Show a callback only the user's rows of a paired state."""
    if callback is None:
        return None

    def sliced(info: StepInfo) -> bool | None:
        denoised = None if info.denoised is None else info.denoised[:rows]
        return callback(StepInfo(info.step, info.total, info.t, info.x[:rows], denoised))

    return sliced
