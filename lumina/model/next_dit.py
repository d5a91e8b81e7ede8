"""Next-DiT, the Lumina-Next-T2I / Lumina-Next-SFT 2B backbone
(official `lumina_next_t2i_mini/models/nextdit.py: NextDiT`).

Tokens: 2×2 patches in row-major order, no [nextline] token: 2-D RoPE over (row, col) carries the
layout. Frames: a (B, C, F, H, W) latent with F > 1 takes 3-D RoPE over (frame, row, col), in
`lumina.model.rope`'s convention (axes interleaved: complex slot 3·k + a rotates by pos[a]·freq_k,
freq_k = 1/theta^(6k/head_dim), a = 0 frame, 1 row, 2 col), so head_dim must be divisible by 6
(the released 2B's 72 is). There is no official Next-DiT video code: this layout is ours (Lumina-
Video, a separate family, lays its RoPE out differently). One frame is exactly the image path
(2-D (row, col) RoPE). Blocks: sandwich RMSNorms around attention
and FFN, adaLN scale and tanh-gate only (no shift), grouped-query attention, gated
cross-attention to Gemma features; the final layer modulates with a scale only.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import LuminaConfig
from ..tokens import TokenLayout
from .attention import LayerContext, LuminaAttention
from .dit import LuminaDiT
from .layers import FeedForward, RMSNorm, adaln_modulation


class NextDiTBlock(nn.Module):
    def __init__(self, c: LuminaConfig) -> None:
        super().__init__()
        self.attention = LuminaAttention(c.dim, c.n_heads, c.kv_heads, c.cap_feat_dim, c.qk_norm)
        self.feed_forward = FeedForward(c.dim, c.hidden_dim)
        self.attention_norm1 = RMSNorm(c.dim, c.norm_eps)
        self.attention_norm2 = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm1 = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm2 = RMSNorm(c.dim, c.norm_eps)
        self.attention_y_norm = RMSNorm(c.cap_feat_dim, c.norm_eps)
        self.adaLN_modulation = adaln_modulation(c.adaln_dim, 4 * c.dim)

    def forward(self, x: Tensor, ctx: LayerContext, layer: int = 0) -> Tensor:
        mod = self.adaLN_modulation(ctx.adaln_input).unsqueeze(1)
        scale_msa, gate_msa, scale_mlp, gate_mlp = mod.chunk(4, dim=-1)
        attn = self.attention(
            self.attention_norm1(x) * (1 + scale_msa), self.attention_y_norm(ctx.cap_feats), ctx, layer, self.attention_y_norm
        )
        x = x + gate_msa.tanh() * self.attention_norm2(attn)
        ffn = self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp))
        return x + gate_mlp.tanh() * self.ffn_norm2(ffn)


class NextDiT(LuminaDiT):
    family = "next_dit"
    final_shift = False

    def make_block(self, config: LuminaConfig) -> nn.Module:
        return NextDiTBlock(config)

    def token_layout(self, frames: int, rows: int, cols: int) -> TokenLayout:
        return TokenLayout(frames, rows, cols)

    def positions(self, layout: TokenLayout) -> Tensor:
        grid = layout.grid_positions()
        if layout.frames == 1:
            return grid[:, 1:]  # (row, col) for images
        self.config.check_frames("x", layout.frames)  # head_dim must take 3 axes
        return grid  # (frame, row, col)
