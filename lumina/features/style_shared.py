"""Style-consistent batches (Lumina-T2X §2.5): items attend also to a reference item's keys and
values in self-attention, so the batch shares one style.

The reference's tokens are appended to each target's sequence before RoPE, at positions after
the target's own (Flag-DiT: sequence index + L; Next-DiT: rows + R for images, frames + F for
latents with frames, i.e. the reference continues the target as later frames), so no position
is duplicated.
The reference itself attends only to itself: its output equals a solo run of it. Under CFG each
guidance half shares within itself (the model batch's rows come from `BatchRows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import LuminaInputError
from ..model.attention import attend
from ..model.hooks import AttentionSite, BatchRows, ForwardFeature, ForwardHook, ForwardInfo
from ..model.rope import apply_rope, rope_angles, rope_table


@dataclass(frozen=True)
class SharedAttention(ForwardFeature):
    """reference: the item whose keys/values are shared; items: which items share (None = all but
    the reference); strength: weight of the reference keys (a log(strength) logit bias; 1 = plain);
    layers: (start, stop) layer range (None = every layer). A per-call feature
    (`ForwardOptions.features`)."""

    reference: int = 0
    items: tuple[bool, ...] | None = None
    strength: float = 1.0
    layers: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.strength > 0:
            raise LuminaInputError(f"style-shared strength={self.strength} must be positive (1 = plain attention)")
        if self.reference < 0:
            raise LuminaInputError(f"style-shared reference item {self.reference} must be ≥ 0")
        if self.layers is not None and not 0 <= self.layers[0] <= self.layers[1]:
            raise LuminaInputError(
                f"style-shared layers {self.layers} must be (start, stop) with 0 ≤ start ≤ stop (stop exclusive)"
            )

    def pairs(self, rows: BatchRows) -> tuple[tuple[int, int], ...]:
        """(target row, reference row) of a model batch: within each guidance half, every sharing
        item's row attends also to the reference item's row."""
        items = rows.item_count
        if not self.reference < items:
            raise LuminaInputError(f"reference item {self.reference} is outside the batch of {items}")
        if self.items is not None and len(self.items) != items:
            raise LuminaInputError(f"items has {len(self.items)} flags for a batch of {items}")
        sharing = self.items or (True,) * items
        return tuple(
            (row, rows.row_of(self.reference, row))
            for row, item in enumerate(rows.items) if sharing[item] and item != self.reference
        )

    @property
    def logit_bias(self) -> float:
        return math.log(self.strength)

    def begin(self, info: ForwardInfo) -> "SharedHook | None":
        layout = info.require_layout("style-shared attention")
        if info.active is not None:
            raise LuminaInputError(
                "style-shared attention needs every token of the reference; turn region-adaptive sampling off for "
                "style-aligned batches"
            )
        pairs = self.pairs(info.rows)
        if not pairs:
            return None
        model = info.model
        pos = model.positions(layout)
        if pos.shape[-1] == 1:  # Flag-DiT: after the whole flat sequence
            appended = pos + layout.length
        elif pos.shape[-1] == 2:  # Next-DiT image (row, col): below the target's rows
            appended = pos + torch.tensor([float(layout.rows), 0.0])
        else:  # Next-DiT frames (frame, row, col): after the target's frames
            appended = pos + torch.tensor([float(layout.frames), 0.0, 0.0])
        angles = rope_angles(
            appended[None].to(info.device), model.config.head_dim, model.config.rope_theta, info.rope_scaling,
            interpolate_positions=model.interpolate_positions,
        )
        targets, refs = zip(*pairs)
        return SharedHook(
            targets=torch.tensor(targets, device=info.device), references=torch.tensor(refs, device=info.device),
            rotations=rope_table(angles), logit_bias=self.logit_bias, layers=self.layers,
        )


@dataclass
class SharedHook(ForwardHook):
    """Style-shared self-attention prepared for one forward."""

    targets: Tensor  # (n,) rows attending also to a reference
    references: Tensor  # (n,) the reference row of each target
    rotations: Tensor  # (1, L, head_dim/2) RoPE of the appended reference tokens
    logit_bias: float
    layers: tuple[int, int] | None

    def after_self_attention(
        self, site: AttentionSite, q: Tensor, k: Tensor, k_unrotated: Tensor, v: Tensor, out: Tensor
    ) -> Tensor:
        """Targets attend to their own tokens and to the reference's, appended after them (RoPE
        at the appended positions, so no position repeats); other rows keep plain attention."""
        if self.layers is not None and not self.layers[0] <= site.layer < self.layers[1]:
            return out
        tgt, ref = self.targets, self.references
        k_ref = apply_rope(k_unrotated[ref], self.rotations)
        keys = torch.cat([k[tgt], k_ref], dim=1)
        values = torch.cat([v[tgt], v[ref]], dim=1)
        bias = None
        if self.logit_bias != 0.0:
            length = k.shape[1]
            bias = torch.zeros(tgt.numel(), 2 * length, dtype=q.dtype, device=q.device)
            bias[:, length:] = self.logit_bias
        shared = attend(q[tgt], keys, values, key_mask=bias, scale=site.self_scale)
        return out.index_copy(0, tgt, shared)
