"""Compositional generation (Lumina-T2X §2.5): each regional caption is cross-attended only by the
image tokens of its region; self-attention stays global so the picture stays one picture.

Differences from the official `lumina_next_compositional_generation` code, on purpose:
- regions are any masks (boxes, grids of any shape, painted masks), not only an h×w grid whose
  region-id formula `(h+1)·(w+1)−1` collides on 2×2 grids;
- tokens covered by no region attend to the global caption instead of getting no text at all,
  and overlapping regions share a token by weight instead of summing their outputs;
- any batch size: the regions apply to the batch rows named in `rows` (the conditional half under
  CFG), every other row keeps its own caption.
The pooled adaLN input is the caller's global caption, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LuminaInputError


@dataclass(eq=False)
class RegionalPrompts:
    """R regional captions and where they apply.

    cap_feats (R, Lr, D) and cap_mask (R, Lr): the regions' text-encoder features and masks.
    masks (R, h, w): weights in [0, 1] at latent resolution (any h, w: resized to the latent).
    rows: batch rows of the model call that use the regions (None = every row).
    """

    cap_feats: Tensor
    cap_mask: Tensor
    masks: Tensor
    rows: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        r = self.cap_feats.shape[0]
        if self.cap_feats.ndim != 3 or tuple(self.cap_mask.shape) != tuple(self.cap_feats.shape[:2]):
            raise LuminaInputError(
                f"regional captions need cap_feats (regions, tokens, width) and cap_mask (regions, tokens); got "
                f"{tuple(self.cap_feats.shape)} and {tuple(self.cap_mask.shape)}"
            )
        if self.masks.ndim != 3 or self.masks.shape[0] != r:
            raise LuminaInputError(f"need one (h, w) mask per region: {r} captions but masks of shape {tuple(self.masks.shape)}")

    def with_rows(self, rows: tuple[int, ...]) -> "RegionalPrompts":
        return RegionalPrompts(self.cap_feats, self.cap_mask, self.masks, rows)


def box_mask(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> Tensor:
    """A (height, width) 0/1 mask with a box set (all in latent pixels)."""
    mask = torch.zeros(height, width)
    mask[top : top + box_h, left : left + box_w] = 1.0
    return mask


def grid_masks(rows: int, cols: int, height: int, width: int) -> Tensor:
    """(rows·cols, height, width) masks of a rows × cols grid, row-major; edges split evenly."""
    ys = torch.linspace(0, height, rows + 1).round().long()
    xs = torch.linspace(0, width, cols + 1).round().long()
    masks = [box_mask(height, width, int(ys[i]), int(xs[j]), int(ys[i + 1] - ys[i]), int(xs[j + 1] - xs[j]))
             for i in range(rows) for j in range(cols)]
    return torch.stack(masks)


def patch_weights(masks: Tensor, latent_h: int, latent_w: int, patch: int) -> Tensor:
    """(R, h, w) masks → (R, latent_h/p, latent_w/p) per-patch weights: each region's coverage,
    scaled down where regions overlap so a token's region weights never sum above 1."""
    resized = F.interpolate(masks[None].float(), size=(latent_h, latent_w), mode="bilinear", align_corners=False)[0]
    per_patch = F.avg_pool2d(resized[None], patch)[0].clamp(0, 1)
    total = per_patch.sum(0, keepdim=True)
    return torch.where(total > 1, per_patch / total.clamp(min=1e-12), per_patch)
