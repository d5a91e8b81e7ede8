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
from ..model.hooks import AttentionSite, ForwardFeature, ForwardHook, ForwardInfo
from ..tokens import TokenLayout, pack


@dataclass(eq=False)
class RegionalPrompts(ForwardFeature):
    """R regional captions and where they apply; a per-call feature (`ForwardOptions.features`).

    cap_feats (R, Lr, D) and cap_mask (R, Lr): the regions' text-encoder features and masks.
    masks (R, h, w): weights in [0, 1] at latent resolution (any h, w: resized to the latent); for
      latents with frames the same (h, w) regions apply to every frame.
    rows: batch rows of the model call that use the regions (None = every conditional row).
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

    def begin(self, info: ForwardInfo) -> "RegionalHook":
        layout = info.require_layout("regional prompts")
        config = info.model.config
        if self.cap_feats.shape[-1] != config.cap_feat_dim:
            raise LuminaInputError(
                f"regional caption width {self.cap_feats.shape[-1]} does not match the model's {config.cap_feat_dim}"
            )
        batch = info.rows.size
        rows = info.rows.conditional_rows() if self.rows is None else self.rows
        if any(not 0 <= r < batch for r in rows):
            raise LuminaInputError(f"regional rows {rows} are outside the batch of {batch}")
        cap_mask = self.cap_mask.to(info.device, torch.bool)
        empty = (~cap_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise LuminaInputError(
                f"regional captions {empty} mark no tokens; attention over no keys is undefined. "
                "Keep at least the BOS token of every regional prompt"
            )
        weights = token_weights(self.masks.to(info.device), layout, config.patch_size)  # (R, L)
        global_weight = 1 - weights.sum(0)
        row_index = torch.tensor(rows, dtype=torch.long, device=info.device)
        if info.active is not None:  # only some slots are computed: per row (n, R, L'), (n, L')
            picked = info.active[row_index]
            weights, global_weight = weights[:, picked].permute(1, 0, 2), global_weight[picked]
        return RegionalHook(
            rows=row_index, cap_feats=self.cap_feats.to(info.device, info.dtype),
            cap_mask=None if bool(cap_mask.all()) else cap_mask, weights=weights, global_weight=global_weight,
        )


@dataclass
class RegionalHook(ForwardHook):
    """Regional prompts prepared for one forward: each regional caption answers only its
    region's queries; a row's own (global) caption answers the rest."""

    rows: Tensor  # (n,) batch rows that use the regions
    cap_feats: Tensor  # (R, Lr, cap_feat_dim) raw region captions
    cap_mask: Tensor | None  # (R, Lr) bool
    weights: Tensor  # (R, L) each token's weight per region (summing to ≤ 1); (n, R, L) per row
    global_weight: Tensor  # (L,) weight of the row's own caption: 1 − Σ weights; (n, L) per row

    def after_cross_attention(self, site: AttentionSite, q: Tensor, out: Tensor) -> Tensor:
        """One attention call over (rows × regions), mixed by the tokens' region weights."""
        attention, rows = site.attention, self.rows
        region_y = site.caption_norm(self.cap_feats)
        n, r, length = rows.numel(), region_y.shape[0], q.shape[1]
        q_rows = q[rows].unsqueeze(1).expand(n, r, *q.shape[1:]).reshape(n * r, *q.shape[1:])
        y = region_y.unsqueeze(0).expand(n, *region_y.shape).reshape(n * r, *region_y.shape[1:])
        mask = None if self.cap_mask is None else self.cap_mask.unsqueeze(0).expand(n, *self.cap_mask.shape).reshape(n * r, -1)
        per_region = attention.cross_attention(q_rows, y, mask, None).view(n, r, length, *q.shape[2:])
        weights, global_weight = self.weights.to(out.dtype), self.global_weight.to(out.dtype)
        if weights.ndim == 2:  # shared by the rows: (R, L), (L,); per row (n, R, L), (n, L)
            weights, global_weight = weights[None], global_weight[None]
        mixed = (per_region * weights[..., None, None]).sum(1) + out[rows] * global_weight[..., None, None]
        return out.index_copy(0, rows, mixed)


def token_weights(masks: Tensor, layout: TokenLayout, patch: int) -> Tensor:
    """(R, h, w) masks → (R, layout.length) region weights of every sequence slot; special
    tokens ([nextline], [nextframe]) get weight 0; every frame gets the same regions."""
    per_patch = patch_weights(masks, layout.rows * patch, layout.cols * patch, patch)  # (R, rows, cols)
    grid = per_patch.permute(1, 2, 0)[None, None].expand(1, layout.frames, -1, -1, -1)  # (1, F, rows, cols, R)
    zero = grid.new_zeros(grid.shape[-1])
    return pack(grid, layout, zero if layout.nextline else None, zero if layout.nextframe else None)[0].T


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
