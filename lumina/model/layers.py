"""Building blocks shared by Flag-DiT and Next-DiT. Module names follow the official state-dict
keys, so official checkpoints load without renaming."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back before the weight, as the official fallback does."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight


def timestep_sinusoid(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """(B,) → (B, dim) [cos | sin] features; Lumina feeds t ∈ [0, 1] unscaled."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_sinusoid(t, self.frequency_dim).to(self.mlp[0].weight.dtype))


def caption_embedder(cap_feat_dim: int, width: int) -> nn.Sequential:
    """Pooled caption → adaLN width: LayerNorm then Linear (keys cap_embedder.0 / .1)."""
    return nn.Sequential(nn.LayerNorm(cap_feat_dim, eps=1e-5), nn.Linear(cap_feat_dim, width))


def pooled_caption(cap_feats: Tensor, cap_mask: Tensor | None) -> Tensor:
    """Masked mean over caption tokens, the text half of the adaLN input."""
    if cap_mask is None:
        return cap_feats.float().mean(dim=1).to(cap_feats.dtype)
    weights = cap_mask.float().unsqueeze(-1)
    return ((cap_feats * weights).sum(dim=1) / weights.sum(dim=1)).to(cap_feats.dtype)


# On CPU a buffer larger than glibc's mmap threshold (32 MiB at most) is fresh memory at every
# allocation: the kernel faults in and zeroes each page at its first touch. A video's SwiGLU
# activations ((tokens, hidden) twice, 50 MB each at 6144 tokens × 2048) paid that at every layer,
# so inference runs the FFN over row chunks whose activations stay under this size: the compiled
# Lumina-Video forward at 6144 tokens took 2735 ms instead of 2808 (-2.6 %, both timed in one
# process), and less memory is held at once.
CPU_FFN_CHUNK_BYTES = 16 * 2**20


def ffn_chunk_rows(x: Tensor, hidden: int) -> int | None:
    """Rows per chunk for a SwiGLU over x (..., dim) with `hidden` units, or None for one pass: a
    CPU inference call whose (rows, hidden) activation exceeds CPU_FFN_CHUNK_BYTES. Training keeps
    one pass (autograd would keep every chunk's activations anyway)."""
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return None
    return cpu_ffn_chunk_rows(x.numel() // x.shape[-1], hidden, x.element_size())


def cpu_ffn_chunk_rows(rows: int, hidden: int, element_size: int) -> int | None:
    """The chunk rule of CPU inference on sizes alone (lumina.memory estimates with it)."""
    per_row = hidden * element_size
    if rows * per_row <= CPU_FFN_CHUNK_BYTES:
        return None
    return max(1, CPU_FFN_CHUNK_BYTES // per_row)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) · w3 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        chunk = ffn_chunk_rows(x, self.w1.weight.shape[0])
        if chunk is None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        flat = x.reshape(-1, x.shape[-1])  # no gradients here: the activations are updated in place
        parts = [self.w2(F.silu(self.w1(part), inplace=True).mul_(self.w3(part))) for part in flat.split(chunk)]
        return torch.cat(parts).view(*x.shape[:-1], -1)


def adaln_modulation(width: int, out: int) -> nn.Sequential:
    """SiLU → Linear, key adaLN_modulation.1."""
    return nn.Sequential(nn.SiLU(), nn.Linear(width, out))


class FinalLayer(nn.Module):
    """Affine-free LayerNorm, adaLN modulation (scale only, or shift and scale), linear head."""

    def __init__(self, dim: int, adaln_dim: int, out_features: int, with_shift: bool) -> None:
        super().__init__()
        self.with_shift = with_shift
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_features)
        self.adaLN_modulation = adaln_modulation(adaln_dim, (2 if with_shift else 1) * dim)

    def forward(self, x: Tensor, adaln_input: Tensor) -> Tensor:
        mod = self.adaLN_modulation(adaln_input).unsqueeze(1)
        if self.with_shift:
            shift, scale = mod.chunk(2, dim=-1)
            return self.linear(self.norm_final(x) * (1 + scale) + shift)
        return self.linear(self.norm_final(x) * (1 + mod))
