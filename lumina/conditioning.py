"""Caption conditioning: text-encoder features plus their attention mask, batched and padded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import LuminaInputError


@dataclass(frozen=True)
class Conditioning:
    """cap_feats (B, L, D) text-encoder features and cap_mask (B, L) bool, True for real tokens."""

    cap_feats: Tensor
    cap_mask: Tensor

    def __post_init__(self) -> None:
        if self.cap_feats.ndim != 3 or tuple(self.cap_mask.shape) != tuple(self.cap_feats.shape[:2]):
            raise LuminaInputError(
                f"conditioning needs cap_feats (batch, tokens, width) and cap_mask (batch, tokens); got "
                f"{tuple(self.cap_feats.shape)} and {tuple(self.cap_mask.shape)}"
            )
        object.__setattr__(self, "cap_mask", self.cap_mask.to(torch.bool))

    @property
    def batch(self) -> int:
        return self.cap_feats.shape[0]

    @property
    def length(self) -> int:
        return self.cap_feats.shape[1]

    def repeat_to(self, batch: int) -> "Conditioning":
        """Broadcast a single caption over a batch (a batch-1 caption for B latents)."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise LuminaInputError(f"a conditioning of batch {self.batch} cannot serve {batch} latents; use 1 or {batch} captions")
        return Conditioning(self.cap_feats.expand(batch, -1, -1), self.cap_mask.expand(batch, -1))

    def padded_to(self, length: int) -> "Conditioning":
        """Right-pad with masked zero tokens (they get no attention weight and no pooling weight)."""
        extra = length - self.length
        if extra <= 0:
            return self
        return Conditioning(F.pad(self.cap_feats, (0, 0, 0, extra)), F.pad(self.cap_mask, (0, extra)))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        return Conditioning(self.cap_feats.to(device=device, dtype=dtype), self.cap_mask.to(device))


def concat(conds: list[Conditioning]) -> Conditioning:
    """Stack conditionings along the batch, padding captions to the longest (shared padding, like
    the official code that tokenises prompt and negative prompt together)."""
    length = max(c.length for c in conds)
    padded = [c.padded_to(length) for c in conds]
    return Conditioning(torch.cat([c.cap_feats for c in padded]), torch.cat([c.cap_mask for c in padded]))
