"""`lumina.sample`: text-to-image and image-to-image sampling as the official scripts do it.

The pieces are separate and reusable: the settings (`SamplingSettings`), a guided velocity
callable (one batched forward for the conditional and unconditional halves), a time grid
(lumina.flow), the image start (lumina.editing), a solver (lumina.solvers), and velocity wrappers
the caller puts around the model call (region-adaptive sampling is one). Nodes and the trainer's
validation both call `sample`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor

from .conditioning import Conditioning, concat
from .editing import ImageStart
from .errors import LuminaInputError, LuminaNumericError
from .guidance import OFFICIAL_GUIDED_CHANNELS, combine
from .memory import check_sampling_fits
from .model import ForwardOptions, LuminaDiT
from .model.hooks import ForwardFeature, batch_rows
from .model.options import DEFAULT_OPTIONS
from .sampling_settings import SamplingSettings
from .solvers import Callback, StepInfo, VelocityFn, solve

FeatureVelocityFn = Callable[..., Tensor]
"""v(x, t, features=()): a velocity callable that also takes per-call features for its model call."""


def seeded_noise(shape: Sequence[int], seed: int) -> Tensor:
    """fp32 CPU `torch.randn` after seeding, like the official scripts, so one seed gives one
    image on every device. Item 0 equals the official [1, C, h, w] draw."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def guided_velocity(
    model: LuminaDiT, cond: Conditioning, uncond: Conditioning | None = None, cfg: float = 4.0,
    cfg_mode: str = "official", options: ForwardOptions | None = None, *, paired: bool = False,
) -> FeatureVelocityFn:
    """v(x, t, features=()) for a batch x: conditional and unconditional rows in one forward, then CFG.

    Like the official `forward_with_cfg`, both halves see the same latent x; the returned
    velocity is fp32 whatever the model's dtype. `features` are added to the options' features
    for that one call (a velocity wrapper's per-call state).

    paired (official CFG only): the state is the official [x; x_u] pair. Both rows get the guided
    channels 0–2; x_u's channel 3 follows the unconditional prediction and is never fed back.
    Row 0 does not depend on x_u, so only an adaptive solver, whose error norm spans both rows,
    needs the pair to pick the official step sizes.

    The model batch is described to the features by `batch_rows`: [conditional items;
    unconditional items] under CFG, so item-level features land on the right rows.
    """
    unguided = uncond is None or cfg == 1.0
    base = options or DEFAULT_OPTIONS
    halves = (True,) if unguided else (True, False)
    prepared: dict[int, tuple[Conditioning, ForwardOptions]] = {}  # per latent batch size, built once

    def batched(b: int) -> tuple[Conditioning, ForwardOptions]:
        if b not in prepared:
            caption = cond.repeat_to(b) if unguided else concat([cond.repeat_to(b), uncond.repeat_to(b)])
            prepared[b] = caption, replace(base, rows=batch_rows(b, halves))
        return prepared[b]

    def call(x: Tensor, t: Tensor, b: int, features: tuple[ForwardFeature, ...]) -> Tensor:
        caption, opts = batched(b)
        if features:
            opts = replace(opts, features=opts.features + tuple(features))
        try:
            return model(x, t.expand(x.shape[0]), caption.cap_feats, caption.cap_mask, opts).float()
        except LuminaInputError:
            # the model checks its inputs; a non-finite state here came from an earlier model call
            # (the user's noise and start latent were checked), so name that cause instead
            if bool(torch.isfinite(x).all()):
                raise
            raise LuminaNumericError(
                f"sampling reached NaN or infinite values before t={float(t):.4f}: the model produced them from finite "
                "inputs; its weights may overflow in their dtype (fp16: load in bf16 or fp32) or the checkpoint may "
                "be damaged"
            ) from None

    if unguided:
        def velocity(x: Tensor, t: Tensor, features: tuple[ForwardFeature, ...] = ()) -> Tensor:
            return call(x, t, x.shape[0], features)

        return velocity

    def guided(x: Tensor, t: Tensor, features: tuple[ForwardFeature, ...] = ()) -> Tensor:
        b = x.shape[0] // 2 if paired else x.shape[0]
        half = x[:b]
        out = call(torch.cat([half, half]), t, b, features)
        v = combine(out[:b], out[b:], cfg, cfg_mode)
        if not paired:
            return v
        k = OFFICIAL_GUIDED_CHANNELS
        return torch.cat([v, torch.cat([v[:, :k], out[b:, k:]], dim=1)])

    return guided


@dataclass(frozen=True)
class SamplingPlan:
    """What a velocity wrapper knows of the run before it starts."""

    settings: SamplingSettings
    grid: Tensor  # the times the solver lands on
    latent_shape: tuple[int, ...]
    patch_size: int

    @property
    def model_calls(self) -> int:
        """Model evaluations of a fixed-step solver over the grid."""
        return self.settings.model_calls(len(self.grid))


class VelocityWrapper(Protocol):
    """Something the caller puts around the model call for one run (RegionAdaptive is one):
    checks the plan before any model call and returns the velocity callable the solver uses."""

    def wrap(self, velocity: FeatureVelocityFn, plan: SamplingPlan) -> FeatureVelocityFn: ...


def check_latent_shape(model: LuminaDiT, shape: Sequence[int]) -> tuple[int, ...]:
    """(B, C, h, w) for images, (B, C, F, h, w) with frames (video, multi-view)."""
    c = model.config
    if len(shape) not in (4, 5):
        raise LuminaInputError(
            f"latent shape {tuple(shape)} cannot be sampled: it needs (batch, {c.in_channels}, h, w), or "
            f"(batch, {c.in_channels}, frames, h, w) with frames"
        )
    where = f"latent shape {tuple(shape)}"
    if len(shape) == 5:
        c.check_frames(where, shape[2])
        c.check_latent(where, shape[1], *shape[3:])
    else:
        c.check_latent(where, *shape[1:])
    return tuple(shape)


def sample(
    model: LuminaDiT,
    cond: Conditioning,
    uncond: Conditioning | None = None,
    latent_shape: Sequence[int] | None = None,
    settings: SamplingSettings | None = None,
    *,
    start: ImageStart | None = None,
    noise: Tensor | None = None,
    seed: int = 0,
    options: ForwardOptions | None = None,
    wrappers: Sequence[VelocityWrapper] = (),
    callback: Callback | None = None,
    trajectory: bool = False,
    **setting_changes,
) -> Tensor:
    """Solve the flow ODE from noise (t = 0) — or from an image latent part-way — to data (t = 1).

    Text-to-image: give `latent_shape` (B, C, h, w); with frames (video, multi-view) (B, C, F, h, w)
    (the seeded noise, memory check, every solver and CFG mode work alike). Image-to-image: give `start`
    (`lumina.editing.ImageStart`: the VAE latent and a start time λ or an official strength).
    `settings` (`SamplingSettings`; defaults: the official Lumina-T2I demo's euler, 30 grid points,
    shift 4, cfg 4, official CFG) can be given whole or by name, e.g.
    `sample(model, cond, uncond, shape, steps=30, solver="midpoint", cfg=4)`.
    `options`: per-call forward options and features (lumina.model.ForwardOptions);
    `wrappers`: velocity wrappers around the model call (e.g. lumina.features.RegionAdaptive).
    Returns the final latent in fp32, or with `trajectory` the state at every grid point (B
    stacked along a new first axis). The official seeding: `noise` or `seeded_noise(shape, seed)`.
    """
    settings = SamplingSettings.of(settings, **setting_changes)
    if start is not None:
        latent_shape = tuple(start.latent.shape)
    if latent_shape is None:
        raise LuminaInputError("give latent_shape (batch, channels, h, w), or start= an ImageStart for image-to-image")
    latent_shape = check_latent_shape(model, latent_shape)
    guided = uncond is not None and settings.cfg != 1.0
    check_sampling_fits(  # before any allocation: refuse what cannot fit, naming the largest size that does
        model, latent_shape, cfg_batch=guided, solver=settings.solver,
        caption_tokens=max(cond.length, uncond.length if uncond is not None else 0),
        caption_padded=bool(uncond is not None and cond.length != uncond.length) or not bool(cond.cap_mask.all()),
    )

    device = model.x_embedder.weight.device
    if noise is None:
        noise = seeded_noise(latent_shape, seed)
    elif tuple(noise.shape) != latent_shape:
        raise LuminaInputError(f"noise shape {tuple(noise.shape)} does not match the latent shape {latent_shape}")
    noise = noise.to(device, torch.float32)
    if not bool(torch.isfinite(noise).all()):
        raise LuminaInputError("noise contains NaN or infinite values")
    if start is not None and not bool(torch.isfinite(start.latent).all()):
        raise LuminaInputError("the image-to-image start latent contains NaN or infinite values; check the VAE encode (fp16 VAEs overflow)")

    grid = settings.time_grid()
    x = noise
    if start is not None:
        x, grid = start.begin(grid, noise)
        if len(grid) < 2:  # nothing left to integrate: λ = 1 or strength 0 returns the latent
            return x[None] if trajectory else x

    paired = guided and settings.cfg_mode == "official" and settings.solver == "dopri5"
    velocity = guided_velocity(
        model, cond.to(device), None if uncond is None else uncond.to(device), settings.cfg, settings.cfg_mode,
        options, paired=paired,
    )
    plan = SamplingPlan(settings, grid, latent_shape, model.config.patch_size)
    for wrapper in wrappers:  # each checks the plan now, before any model call
        velocity = wrapper.wrap(velocity, plan)
    b = x.shape[0]
    if paired:
        x = torch.cat([x, x])
        callback = _first_rows(callback, b)
    with torch.inference_mode():
        out = solve(velocity, x, grid.to(device), settings.solver, atol=settings.atol, rtol=settings.rtol,
                    callback=callback, trajectory=trajectory)
    return require_finite(out[:, :b] if trajectory else out[:b])


def require_finite(out: Tensor) -> Tensor:
    """A sampler's result, or LuminaNumericError when it holds NaN or infinite values (from finite
    inputs, so the model overflowed): one reduction, and never a black picture handed back as a success."""
    if not bool(torch.isfinite(out).all()):
        raise LuminaNumericError(
            "sampling produced NaN or infinite values from finite inputs; the model's weights may overflow in their "
            "dtype (fp16: load in bf16 or fp32) or the checkpoint may be damaged"
        )
    return out


def _first_rows(callback: Callback | None, rows: int) -> Callback | None:
    """Show a callback only the user's rows of a paired state."""
    if callback is None:
        return None

    def sliced(info: StepInfo) -> bool | None:
        denoised = None if info.denoised is None else info.denoised[:rows]
        return callback(StepInfo(info.step, info.total, info.t, info.x[:rows], denoised))

    return sliced


__all__ = ["sample", "seeded_noise", "guided_velocity", "SamplingPlan", "VelocityWrapper", "FeatureVelocityFn", "VelocityFn"]
