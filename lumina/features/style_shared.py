"""Style-consistent batches (Lumina-T2X §2.5): items attend also to a reference item's keys and
values in self-attention, so the batch shares one style.

The reference's tokens are appended to each target's sequence before RoPE, at positions after
the target's own (Flag-DiT: sequence index + L; Next-DiT: rows + R), so no position is duplicated.
The reference itself attends only to itself: its output equals a solo run of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import LuminaInputError


@dataclass(frozen=True)
class SharedAttention:
    """reference: the item whose keys/values are shared; items: which items share (None = all but
    the reference); strength: weight of the reference keys (a log(strength) logit bias; 1 = plain);
    layers: (start, stop) layer range (None = every layer); pairs: (target row, reference row) of
    the model call, filled by `resolve` (the sampler maps items onto the CFG batch)."""

    reference: int = 0
    items: tuple[bool, ...] | None = None
    strength: float = 1.0
    layers: tuple[int, int] | None = None
    pairs: tuple[tuple[int, int], ...] | None = None

    def resolve(self, batch: int, groups: int = 1) -> "SharedAttention":
        """Pairs for a model batch made of `groups` consecutive copies of a `batch`-item batch
        (2 under CFG: conditional rows, then unconditional rows)."""
        if not 0 <= self.reference < batch:
            raise LuminaInputError(f"reference item {self.reference} is outside the batch of {batch}")
        if self.items is not None and len(self.items) != batch:
            raise LuminaInputError(f"items has {len(self.items)} flags for a batch of {batch}")
        if self.strength <= 0:
            raise LuminaInputError(f"strength={self.strength} must be positive")
        items = self.items or tuple(True for _ in range(batch))
        pairs = tuple(
            (g * batch + i, g * batch + self.reference)
            for g in range(groups) for i in range(batch) if items[i] and i != self.reference
        )
        return replace(self, pairs=pairs)

    def active(self, layer: int) -> bool:
        return self.layers is None or self.layers[0] <= layer < self.layers[1]

    @property
    def logit_bias(self) -> float:
        return math.log(self.strength)
