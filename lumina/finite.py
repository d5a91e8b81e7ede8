"""`all_finite`: the NaN/inf check every input and weight goes through, at the cost of one sum."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def all_finite(t: Tensor) -> bool:
    """No NaN or ±inf in a tensor, at the cost of one reduction.

    NaN and inf survive a sum (inf - inf is NaN), so a finite sum proves every element finite.
    A sum of large finite values can overflow too (fp16 tops out at 65504), so a non-finite sum
    is confirmed element-wise; that slower path only runs for tensors that are almost surely bad.
    The sum stays in the tensor's dtype: torch's native bf16/fp16 sums accumulate in float and
    are vectorised (~8x faster on CPU than `sum(dtype=float32)`, ~20x than `isfinite().all()`,
    which builds a bool tensor through abs/ne/eq: ~1 ms of a small video forward's 180)."""
    if not t.is_floating_point() or t.numel() == 0 or t.device.type == "meta":
        return True
    try:
        # math.isfinite on the Python float: torch.isfinite on a 0-d tensor costs more than small sums
        return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())
    except (RuntimeError, TypeError):  # exotic dtypes (float8) without a sum kernel: one tensor's float copy
        return bool(torch.isfinite(t.float()).all())


__all__ = ["all_finite"]
