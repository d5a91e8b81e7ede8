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
    except (RuntimeError, TypeError):  # dtypes without a sum kernel (float8)
        if t.dtype in _FIRST_NONFINITE_CODE:
            return _float8_all_finite(t)
        return bool(torch.isfinite(t.float()).all())


# The fp8 formats' smallest non-finite bit pattern with the sign bit clear (e4m3fn: 0x7F is NaN and
# it has no inf; e5m2: 0x7C is +inf and 0x7D-0x7F are NaN); with the sign bit set add 0x80. The
# finite patterns lie below these, so two byte-wise maxima check a tensor without copying it
# (a float copy is 4 bytes per element: at every weight of an fp8 load, the allocator kept about
# as much again as the weights).
_FIRST_NONFINITE_CODE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def _float8_all_finite(t: Tensor) -> bool:
    code = _FIRST_NONFINITE_CODE[t.dtype]
    bits = t.reshape(-1).view(torch.uint8)
    # as int8 the positive patterns keep their order and the negative ones fall below zero; as
    # uint8 the negative patterns are the 0x80.. range above every positive one
    return int(bits.view(torch.int8).max()) < code and int(bits.max()) < 0x80 | code


__all__ = ["all_finite"]
