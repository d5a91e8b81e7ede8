"""Rotary position embeddings for 1-, 2- and 3-axis token positions, with the official scalings.

Both families rotate consecutive pairs (2j, 2j+1) of a head as one complex number (the
LLaMA-meta convention, not rotate-half). With A position axes, complex slot A·k + a carries the
angle pos[a]·freq_k, k < head_dim/(2A): Flag-DiT is A=1 over the flattened sequence, Next-DiT is
A=2 over (row, col), alternating h and w. A=3 extends that to (frame, row, col).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RopeScaling:
    """linear: position interpolation (angles ÷ linear); ntk: theta × ntk."""

    linear: float = 1.0
    ntk: float = 1.0


def time_aware_scaling(scale: float, watershed: float, t: float) -> RopeScaling:
    """Lumina-Next time-aware scaled RoPE: interpolate positions while the sample is noisy
    (t < watershed, t=0 is noise), then switch to NTK so fine detail keeps high frequencies."""
    return RopeScaling(linear=scale, ntk=1.0) if t < watershed else RopeScaling(linear=1.0, ntk=scale)


def axis_frequencies(head_dim: int, n_axes: int, theta: float) -> Tensor:
    """(head_dim / (2·n_axes),) base frequencies 1 / theta^(2·n_axes·k / head_dim), in fp32."""
    step = 2 * n_axes
    return 1.0 / (theta ** (torch.arange(0, head_dim, step)[: head_dim // step].float() / head_dim))


def rope_angles(
    positions: Tensor, head_dim: int, theta: float = 10000.0, scaling: RopeScaling = RopeScaling(),
    *, interpolate_positions: bool = False,
) -> Tensor:
    """(..., A) positions → (..., head_dim/2) fp32 angles, axes interleaved.

    The two families apply position interpolation at different points (Flag-DiT divides the
    positions, Next-DiT the frequencies); `interpolate_positions` picks Flag-DiT's order so both
    reproduce the official tables bit for bit.
    """
    n_axes = positions.shape[-1]
    freqs = axis_frequencies(head_dim, n_axes, theta * scaling.ntk).to(positions.device)
    positions = positions.float()
    if interpolate_positions:
        positions = positions / scaling.linear
    else:
        freqs = freqs / scaling.linear
    angles = positions[..., :, None] * freqs  # (..., A, K)
    return angles.transpose(-1, -2).flatten(-2)  # slot A·k + a


def rope_table(angles: Tensor) -> Tensor:
    """Angles → unit complex rotations (complex64), the form `apply_rope` multiplies by."""
    return torch.polar(torch.ones_like(angles), angles)


def real_rotations(rotations: Tensor) -> Tensor:
    """Complex rotations (..., head_dim/2) → their (..., head_dim/2, 2) [cos, sin] pairs, a view
    (no copy). `apply_rope` takes either form; the real one keeps complex tensors out of code that
    torch.compile's inductor generates (it has no complex kernels and falls back to eager ops)."""
    return torch.view_as_real(rotations) if rotations.is_complex() else rotations


def apply_rope(x: Tensor, rotations: Tensor) -> Tensor:
    """Rotate (B, L, H, head_dim) by (B or 1, L, head_dim/2) complex rotations, or by their
    (B or 1, L, head_dim/2, 2) [cos, sin] pairs (`real_rotations`); math in fp32."""
    if rotations.is_complex():
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * rotations.unsqueeze(2)).flatten(3).type_as(x)
    # the complex product written out: (a + ib)(c + is) = (ac − bs) + i(as + bc)
    a, b = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    cos, sin = rotations.unsqueeze(2).unbind(-1)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).type_as(x)
