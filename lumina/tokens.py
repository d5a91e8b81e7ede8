"""Latents ⇄ token sequences: patchify, [nextline]/[nextframe] packing, positions, [PAD] batching.

Sequence order is frame-major, then row-major: for each frame, each row's patches left to right,
followed by a [nextline] token when enabled; a [nextframe] token closes each frame when enabled.
Images are the one-frame case, so video and multi-view latents reuse the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor


@dataclass(frozen=True)
class TokenLayout:
    """Where every token of one latent sits; sizes are in patches."""

    frames: int
    rows: int
    cols: int
    nextline: bool = False
    nextframe: bool = False

    @property
    def row_length(self) -> int:
        return self.cols + int(self.nextline)

    @property
    def frame_length(self) -> int:
        return self.rows * self.row_length + int(self.nextframe)

    @property
    def length(self) -> int:
        return self.frames * self.frame_length

    def grid_positions(self) -> Tensor:
        """(length, 3) float (frame, row, col) of every slot.

        A [nextline] token sits one column past the row's end, a [nextframe] token one row past
        the frame's end, so extended positions never collide with patches.
        """
        f, r, c = torch.meshgrid(
            torch.arange(self.frames), torch.arange(self.rows), torch.arange(self.row_length), indexing="ij"
        )
        grid = torch.stack([f, r, c], dim=-1).reshape(self.frames, self.rows * self.row_length, 3)
        if self.nextframe:
            closing = torch.stack(
                [torch.arange(self.frames), torch.full((self.frames,), self.rows), torch.zeros(self.frames, dtype=torch.long)],
                dim=-1,
            )
            grid = torch.cat([grid, closing[:, None]], dim=1)
        return grid.reshape(self.length, 3).float()

    def patch_slots(self) -> Tensor:
        """(frames · rows · cols,) sequence index of each patch, patches in frame/row-major order."""
        f, r, c = torch.meshgrid(torch.arange(self.frames), torch.arange(self.rows), torch.arange(self.cols), indexing="ij")
        return (f * self.frame_length + r * self.row_length + c).flatten()

    def special_slots(self) -> Tensor:
        """Sequence indices of the [nextline] and [nextframe] tokens, ascending."""
        taken = torch.zeros(self.length, dtype=torch.bool)
        taken[self.patch_slots()] = True
        return (~taken).nonzero().flatten()

    def sequence_positions(self) -> Tensor:
        """(length, 1) float index of each slot in the flattened sequence (Flag-DiT's 1-D RoPE)."""
        return torch.arange(self.length, dtype=torch.float32)[:, None]


def patchify(latent: Tensor, patch: int) -> Tensor:
    """(B, C, [F,] H, W) → (B, F, H/p, W/p, C·p·p), features in the official (c, py, px) order.
    An image is the one-frame case."""
    if latent.ndim == 4:
        latent = rearrange(latent, "b c h w -> b c 1 h w")
    return rearrange(latent, "b c f (r py) (k px) -> b f r k (c py px)", py=patch, px=patch)


def unpatchify(tokens: Tensor, patch: int, channels: int) -> Tensor:
    """(B, F, R, C, p·p·ch) → (B, ch, F, R·p, C·p), features read as (py, px, c) like the official
    final layer, which differs from patchify's (c, py, px)."""
    return rearrange(tokens, "b f r k (py px c) -> b c f (r py) (k px)", py=patch, px=patch, c=channels)


def pack(
    grid: Tensor, layout: TokenLayout, nextline_token: Tensor | None = None, nextframe_token: Tensor | None = None
) -> Tensor:
    """(B, F, R, C, D) patch embeddings → (B, layout.length, D) with the layout's special tokens."""
    b, f, r, c, d = grid.shape
    if (f, r, c) != (layout.frames, layout.rows, layout.cols):
        raise ValueError(f"grid {tuple(grid.shape[1:4])} does not match layout {layout}")
    if layout.nextline:
        grid = torch.cat([grid, nextline_token.to(grid.dtype).expand(b, f, r, 1, d)], dim=3)
    seq = grid.reshape(b, f, r * layout.row_length, d)
    if layout.nextframe:
        seq = torch.cat([seq, nextframe_token.to(grid.dtype).expand(b, f, 1, d)], dim=2)
    return seq.reshape(b, layout.length, d)


def unpack(seq: Tensor, layout: TokenLayout) -> Tensor:
    """(B, ≥layout.length, D) → (B, F, R, C, D): drops special and padding tokens."""
    b, d = seq.shape[0], seq.shape[-1]
    seq = seq[:, : layout.length].reshape(b, layout.frames, layout.frame_length, d)
    seq = seq[:, :, : layout.rows * layout.row_length].reshape(b, layout.frames, layout.rows, layout.row_length, d)
    return seq[:, :, :, : layout.cols]


def pad_sequences(seqs: list[Tensor], pad_token: Tensor) -> tuple[Tensor, Tensor]:
    """Right-pad (L_i, D) sequences with [PAD] to one (B, L_max, D) batch and a (B, L_max) bool mask."""
    longest = max(s.shape[0] for s in seqs)
    out = pad_token.to(seqs[0].dtype).expand(len(seqs), longest, -1).clone()
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool, device=seqs[0].device)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def pad_positions(positions: list[Tensor]) -> Tensor:
    """Right-pad (L_i, A) positions to (B, L_max, A), repeating each item's last position.

    The official Next-DiT gives padded slots the last real token's rotation; padded keys are
    masked out, so any value works, and this one keeps tables bounded.
    """
    longest = max(p.shape[0] for p in positions)
    return torch.stack([torch.cat([p, p[-1:].expand(longest - p.shape[0], -1)]) for p in positions])
