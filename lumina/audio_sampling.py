"""Lumina-T2Music / Lumina-T2Audio sampling: the official conditional flow matching (`CFM` of
`models/diffusion/ddpm_audio.py`) in `lumina.flow`'s convention, on our solvers.

The mapping, checked against the official code and the goldens (tests/fixtures/golden/lumina_music_tiny):
- Direction and time: the same as `lumina.flow`. The official ODE runs t from 0 (noise x0 =
  randn) to 1 (the latent); nothing is reversed or rescaled.
- The model's output is the velocity dx/dt, as in `lumina.flow`. Training regressed it on
  u = x1 − (1 − σ_min)·x0 along x_t = t·x1 + (1 − (1 − σ_min)·t)·x0 with σ_min = 1e-4
  (`cfm_interpolate`, `cfm_target`): lumina.flow's interpolant with the noise scaled by 1 − σ_min
  at t = 1, i.e. a path ending at x1 + σ_min·x0. σ_min appears only in that training loss;
  sampling integrates the model's output as it is, exactly like the official sampler.
- The model is conditioned on the integer step long(t·1000) computed in float32 (truncation);
  `lumina.model.audio_dit.AudioDiT` does that conversion from the flow time it is given.
- Time grid: torchdyn's fixed-step loop over `t_span = linspace(0, 1, steps)` accumulates t
  (t_{k+1} = t_k + (t_span[k+1] − t_k) in float32), so the time the model sees can be one ulp off
  the linspace value and truncate to a different step; `cfm_time_grid` reproduces the accumulated
  times. `steps` counts grid points: steps − 1 Euler model calls (the music demo's 40 → 39).
- Guidance: one batch [unconditional; conditional] (unconditional rows first, like the official
  `Wrapper_cfg`), v = v_u + cfg·(v_c − v_u). cfg = 1 or no unconditional runs the plain call.

The official demos' CFG is a no-op: they build the unconditional features from a dict
{'ori_caption': '', 'struct_caption': ''} that the music text encoder cannot tokenize, and the
`except` falls back to the PROMPT itself, so v_u = v_c. Here the unconditional is whatever the
caller passes — give the features of the empty caption for real CFG (music: FLAN-T5 of "";
audio: CLAP of "" with T5 of ""), which is what the model was trained to drop to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .conditioning import Conditioning
from .errors import LuminaInputError, LuminaNumericError
from .memory import available_memory
from .model.audio_dit import AudioDiT, check_audio_frames
from .model.hooks import batch_rows
from .model.options import DEFAULT_OPTIONS, ForwardOptions
from .sampling import require_finite, seeded_noise
from .solvers import SOLVERS, Callback, VelocityFn, solve

SIGMA_MIN = 1e-4  # CFM.sigma_min (training only)

# mel frames: 16 kHz audio, hop 256 → 62.5 frames/s; the VAE halves time → 31.25 latent frames/s.
# The demos' default 312 latent frames = 624 mel frames ≈ 10 s.
SAMPLE_RATE = 16000
MEL_HOP = 256
VAE_TIME_DOWNSAMPLE = 2


@dataclass(frozen=True)
class AudioSampleSettings:
    """Sampler defaults of the official demos: steps counts time-grid points (steps − 1 model
    calls), cfg the guidance scale (1 = none)."""

    steps: int = 40
    cfg: float = 5.0
    solver: str = "euler"

    def with_(self, **changes: Any) -> "AudioSampleSettings":
        return replace(self, **changes)


AUDIO_SAMPLE_DEFAULTS = {
    "music": AudioSampleSettings(steps=40, cfg=5.0),  # demo_music.py
    "audio": AudioSampleSettings(steps=100, cfg=3.0),  # demo_audio.py
}
DEFAULT_LATENT_FRAMES = 312


# -- the CFM path (training) -------------------------------------------------------------------
def cfm_interpolate(noise: Tensor, data: Tensor, t: Tensor | float, sigma_min: float = SIGMA_MIN) -> Tensor:
    """x_t = t·data + (1 − (1 − σ_min)·t)·noise, t (B,) or scalar in [0, 1]."""
    if isinstance(t, Tensor) and t.ndim == 1:
        t = t.reshape(-1, *([1] * (data.ndim - 1))).to(data.dtype)
    return t * data + (1.0 - (1.0 - sigma_min) * t) * noise


def cfm_target(noise: Tensor, data: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """The regression target data − (1 − σ_min)·noise (the velocity of `cfm_interpolate`)."""
    return data - (1.0 - sigma_min) * noise


def cfm_loss(model: AudioDiT, data: Tensor, noise: Tensor, steps: Tensor, cap_feats: Tensor) -> Tensor:
    """The official `CFM.p_losses` value: integer steps (B,) in [0, 1000) give t = step/1000 for the
    path, while the DiT receives the integer step itself; plain MSE over everything."""
    t = steps.float() / model.config.steps
    x_t = cfm_interpolate(noise, data, t)
    out = model(x_t, steps.long(), cap_feats)
    return ((out.float() - cfm_target(noise, data).float()) ** 2).mean()


# -- time grid and lengths -------------------------------------------------------------------
def cfm_time_grid(steps: int) -> Tensor:
    """The float32 times torchdyn's fixed-step loop visits over linspace(0, 1, steps), the last
    point included: t_0 = 0, t_{k+1} = t_k + (t_span[k+1] − t_k)."""
    if int(steps) < 2:
        raise LuminaInputError(f"steps={steps} is too few: the official grid needs at least 2 points (steps − 1 model calls)")
    span = torch.linspace(0, 1, int(steps))
    t = span[0]
    dt = span[1] - span[0]
    times = [t]
    for k in range(1, len(span)):
        t = t + dt
        times.append(t)
        if k < len(span) - 1:
            dt = span[k + 1] - t
    return torch.stack(times)


def latent_frames_for_seconds(seconds: float, sample_rate: int = SAMPLE_RATE, hop: int = MEL_HOP,
                              downsample: int = VAE_TIME_DOWNSAMPLE, max_len: int | None = None) -> int:
    """Latent frames for `seconds` of audio (rounded down to whole latent frames; 10 s → 312).
    Raises a LuminaInputError for a non-positive or non-finite length, or beyond `max_len` frames."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise LuminaInputError(f"seconds={seconds!r}: the audio length must be a positive number of seconds")
    per_second = sample_rate / (hop * downsample)
    frames = int(seconds * per_second + 1e-6)
    if frames < 1:
        raise LuminaInputError(
            f"seconds={seconds} is shorter than one latent frame ({1 / per_second:.3f} s); ask for a longer audio"
        )
    if max_len is not None and frames > max_len:
        raise LuminaInputError(
            f"seconds={seconds} needs {frames} latent frames but the model's positions stop at {max_len} "
            f"(about {max_len / per_second:.1f} s); ask for at most {max_len / per_second:.2f} s"
        )
    return frames


def seconds_for_latent_frames(frames: int, sample_rate: int = SAMPLE_RATE, hop: int = MEL_HOP,
                              downsample: int = VAE_TIME_DOWNSAMPLE) -> float:
    return frames * hop * downsample / sample_rate


# -- guided velocity ---------------------------------------------------------------------------
def _features(c: Conditioning | Tensor, name: str) -> Tensor:
    feats = c.cap_feats if isinstance(c, Conditioning) else c
    if not isinstance(feats, Tensor) or feats.ndim != 3:
        raise LuminaInputError(f"{name} must be (batch, tokens, width) caption features or a Conditioning, got {type(c).__name__}")
    return feats


def _rows(feats: Tensor, batch: int, name: str) -> Tensor:
    if feats.shape[0] == batch:
        return feats
    if feats.shape[0] != 1:
        raise LuminaInputError(f"{name} has batch {feats.shape[0]} but serves {batch} latents; use 1 or {batch} captions")
    return feats.expand(batch, -1, -1)


def audio_velocity(
    model: AudioDiT, cond: Conditioning | Tensor, uncond: Conditioning | Tensor | None = None, cfg: float = 5.0,
    options: ForwardOptions | None = None,
) -> VelocityFn:
    """v(x, t) (fp32) for a batch x (B, C, T): the official `Wrapper_cfg` — [uncond; cond] rows in
    one forward, v_u + cfg·(v_c − v_u) — or the plain `Wrapper` when uncond is None or cfg == 1.
    Captions enter without a mask (every token, like the official model); a batch-1 caption serves
    every latent. When the two captions differ in length they run as two forwards."""
    c_feats = _features(cond, "cond")
    u_feats = None if uncond is None or cfg == 1.0 else _features(uncond, "uncond")
    base = options or DEFAULT_OPTIONS
    prepared: dict[int, tuple] = {}

    def batched(b: int) -> tuple:
        if b not in prepared:
            c = _rows(c_feats, b, "cond")
            if u_feats is None:
                prepared[b] = (c, None, replace(base, rows=batch_rows(b, (True,))))
            else:
                u = _rows(u_feats, b, "uncond")
                if u.shape[1:] == c.shape[1:]:
                    prepared[b] = (torch.cat([u, c]), None, replace(base, rows=batch_rows(b, (False, True))))
                else:
                    prepared[b] = (c, u, None)
        return prepared[b]

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        feats, u_sep, opts = batched(b)
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1)[:1]
        try:
            if u_feats is None:
                return model(x, t.expand(b), feats, None, opts).float()
            if u_sep is None:
                out = model(torch.cat([x, x]), t.expand(2 * b), feats, None, opts).float()
                v_u, v_c = out.chunk(2)
            else:
                v_u = model(x, t.expand(b), u_sep, None, replace(base, rows=batch_rows(b, (False,)))).float()
                v_c = model(x, t.expand(b), feats, None, replace(base, rows=batch_rows(b, (True,)))).float()
            return v_u + cfg * (v_c - v_u)
        except LuminaInputError:
            if bool(torch.isfinite(x).all()):
                raise
            raise LuminaNumericError(
                f"sampling reached NaN or infinite values before t={float(t[0]):.4f}: the model produced them from "
                "finite inputs; its weights may overflow in their dtype (fp16: load in bf16 or fp32)"
            ) from None

    return velocity


# -- memory ------------------------------------------------------------------------------------
def estimate_audio_sampling_bytes(model: AudioDiT, batch: int, frames: int, caption_tokens: int, cfg_batch: bool) -> int:
    """A generous peak estimate of one forward's activations (weights excluded: already loaded):
    the residual stream and block temporaries, the SwiGLU hidden, self- and cross-attention scores."""
    c = model.config
    rows = batch * (2 if cfg_batch else 1)
    item = torch.finfo(model.dtype).bits // 8
    per_row = frames * (12 * c.dim + 3 * c.hidden_dim) + c.n_heads * frames * (frames + caption_tokens) + caption_tokens * 4 * c.dim
    return int(rows * per_row * max(item, 4) * 2)


def check_audio_sampling_fits(model: AudioDiT, batch: int, frames: int, caption_tokens: int, cfg_batch: bool) -> None:
    device = model.proj_in.weight.device
    need = estimate_audio_sampling_bytes(model, batch, frames, caption_tokens, cfg_batch)
    free = available_memory(device)
    if need > free:
        raise LuminaInputError(
            f"sampling {batch} audio latent(s) of {frames} frames needs about {need / 2**30:.1f} GiB but only "
            f"{free / 2**30:.1f} GiB is free on {device}; use a smaller batch or a shorter audio, or free memory"
        )


# -- the sampler -------------------------------------------------------------------------------
def sample_audio(
    model: AudioDiT, cond: Conditioning | Tensor, uncond: Conditioning | Tensor | None = None,
    frames: int | None = DEFAULT_LATENT_FRAMES, steps: int = 40, cfg: float = 5.0, *, batch: int = 1,
    seconds: float | None = None, noise: Tensor | None = None, seed: int = 0, solver: str = "euler",
    grid: Tensor | None = None, options: ForwardOptions | None = None, callback: Callback | None = None,
    trajectory: bool = False,
) -> Tensor:
    """Solve the CFM flow ODE from noise (t = 0) to the audio latent (t = 1), like the official
    `CFM.sample_cfg` (Euler over `cfm_time_grid(steps)`, [uncond; cond] CFG).

    The latent is (batch, C, frames): `frames` latent frames, or `seconds` of audio
    (`latent_frames_for_seconds`), or the shape of `noise` (default `seeded_noise(shape, seed)`:
    item 0 equals the demo's torch.randn([1, 20, frames]) after torch.manual_seed(seed)).
    `cond` / `uncond`: (1 or B, L, 1024) caption features (or Conditionings; masks are not used,
    like the official model); uncond None or cfg 1 = unguided. Music: steps 40, cfg 5; audio:
    steps 100, cfg 3 (`AUDIO_SAMPLE_DEFAULTS`). `solver`: any of `lumina.solvers.SOLVERS` (the
    official is euler); `grid`: explicit times instead of `cfm_time_grid(steps)`. `callback` sees
    every step (`lumina.solvers.StepInfo`) and stops the run by returning True
    (`SamplingInterrupted`) or raising. Returns the fp32 final latent (in the DiT's scaled domain:
    the VAE decodes latent / scale_factor), or with trajectory=True the (points, B, C, T) stack."""
    c = model.config
    if solver not in SOLVERS:
        raise LuminaInputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not (isinstance(cfg, (int, float)) and math.isfinite(cfg)):
        raise LuminaInputError(f"cfg={cfg!r} must be a finite number (1 = no guidance; music 5, audio 3)")
    if noise is not None:
        if noise.ndim != 3 or noise.shape[1] != c.in_channels:
            raise LuminaInputError(f"noise must be (batch, {c.in_channels}, frames), got {tuple(noise.shape)}")
        shape = tuple(noise.shape)
    else:
        if seconds is not None:
            frames = latent_frames_for_seconds(seconds, max_len=c.max_len)
        if frames is None or not isinstance(frames, int) or isinstance(frames, bool):
            raise LuminaInputError(f"frames={frames!r} must be a whole number of latent frames (or give seconds)")
        if int(batch) < 1:
            raise LuminaInputError(f"batch={batch} must be at least 1")
        shape = (int(batch), c.in_channels, frames)
    check_audio_frames(shape[2], c.max_len, "the audio latent")
    device = model.proj_in.weight.device
    x = (seeded_noise(shape, seed) if noise is None else noise).to(device, torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise LuminaInputError("noise contains NaN or infinite values")
    if grid is None:
        grid = cfm_time_grid(steps)
    else:
        grid = torch.as_tensor(grid, dtype=torch.float32).reshape(-1)
        if len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()) or float(grid[0]) < 0.0 or float(grid[-1]) > 1.0:
            raise LuminaInputError(f"the time grid must rise from t ≥ 0 to t ≤ 1 in at least 2 points, got {grid.tolist()[:8]}")
    c_feats = _features(cond, "cond")
    guided = uncond is not None and cfg != 1.0
    tokens = max(c_feats.shape[1], _features(uncond, "uncond").shape[1] if guided else 0)
    check_audio_sampling_fits(model, shape[0], shape[2], tokens, guided)
    velocity = audio_velocity(
        model, c_feats.to(device), _features(uncond, "uncond").to(device) if guided else None, float(cfg), options,
    )
    with torch.inference_mode():
        out = solve(velocity, x, grid.to(device), solver, callback=callback, trajectory=trajectory)
    return require_finite(out)


__all__ = [
    "SIGMA_MIN", "AudioSampleSettings", "AUDIO_SAMPLE_DEFAULTS", "DEFAULT_LATENT_FRAMES", "cfm_interpolate", "cfm_target",
    "cfm_loss", "cfm_time_grid", "latent_frames_for_seconds", "seconds_for_latent_frames", "audio_velocity",
    "estimate_audio_sampling_bytes", "check_audio_sampling_fits", "sample_audio",
]
