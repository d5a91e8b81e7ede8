"""Flag-DiT, the Lumina-T2I 5B backbone (official `lumina_t2i/models/model.py: DiT_Llama`).

Tokens: 2×2 patches in row-major order with a learned [nextline] token (`eol_token`) closing every
row, so the flattened sequence remembers the image's shape; 1-D RoPE over that sequence.
Frames (Lumina-T2X §2.2): a (B, C, F, H, W) latent is laid out frame by frame, each frame's rows
with their [nextline] tokens followed by a learned [nextframe] token (`nextframe_token`), and the
1-D RoPE runs over the whole flat sequence (`lumina.tokens.TokenLayout`). One frame is exactly the
image layout (no [nextframe]). The token is a parameter only when `config.nextframe_token` (new
models); released checkpoints have none and refuse more than one frame.
Blocks: RMSNorm, adaLN shift/scale/gate from timestep + pooled caption with raw (untanh'd)
gates, KQ-norm attention with gated cross-attention to LLaMA features, SwiGLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import LuminaConfig
from ..tokens import TokenLayout, pack
from .attention import LayerContext, LuminaAttention
from .dit import LuminaDiT
from .layers import FeedForward, RMSNorm, adaln_modulation


class FlagDiTBlock(nn.Module):
    def __init__(self, c: LuminaConfig) -> None:
        super().__init__()
        self.attention = LuminaAttention(c.dim, c.n_heads, c.kv_heads, c.cap_feat_dim, c.qk_norm)
        self.feed_forward = FeedForward(c.dim, c.hidden_dim)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention_y_norm = RMSNorm(c.cap_feat_dim, c.norm_eps)
        self.adaLN_modulation = adaln_modulation(c.adaln_dim, 6 * c.dim)

    def forward(self, x: Tensor, ctx: LayerContext, layer: int = 0) -> Tensor:
        mod = self.adaLN_modulation(ctx.adaln_input).unsqueeze(1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = self.attention_norm(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * self.attention(h, self.attention_y_norm(ctx.cap_feats), ctx, layer, self.attention_y_norm)
        h = self.ffn_norm(x) * (1 + scale_mlp) + shift_mlp
        return x + gate_mlp * self.feed_forward(h)


class FlagDiT(LuminaDiT):
    family = "flag_dit"
    final_shift = True
    interpolate_positions = True  # official: positions / rope_scaling_factor

    def __init__(self, config: LuminaConfig) -> None:
        super().__init__(config)
        self.eol_token = nn.Parameter(torch.zeros(config.dim))
        if config.nextframe_token:  # like eol_token: zeros here, N(0, 0.02) in train's init_weights
            self.nextframe_token = nn.Parameter(torch.zeros(config.dim))

    def make_block(self, config: LuminaConfig) -> nn.Module:
        return FlagDiTBlock(config)

    def token_layout(self, frames: int, rows: int, cols: int) -> TokenLayout:
        return TokenLayout(frames, rows, cols, nextline=True, nextframe=frames > 1)

    def positions(self, layout: TokenLayout) -> Tensor:
        return layout.sequence_positions()

    def embed_grid(self, grid: Tensor, layout: TokenLayout) -> Tensor:
        if not layout.nextframe:
            return pack(grid, layout, nextline_token=self.eol_token)
        self.config.check_frames("x", layout.frames)  # no [nextframe] token: the error names the fix
        return pack(grid, layout, nextline_token=self.eol_token, nextframe_token=self.nextframe_token)
