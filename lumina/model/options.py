"""Per-call forward options. Passed with each call, never stored on the model, so one loaded
model serves many samplers and nodes with different settings at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import LuminaInputError

from .hooks import BatchRows, ForwardFeature
from .rope import RopeScaling, time_aware_scaling


@dataclass(frozen=True)
class ForwardOptions:
    """Resolution-extrapolation knobs of the official code, and the call's features.

    rope_linear / rope_ntk: Flag-DiT `rope_scaling_factor` / `ntk_factor` (also valid for Next-DiT).
    time_aware_scale / time_aware_watershed: Next-DiT `scale_factor` / `scale_watershed`; when set they
      replace rope_linear / rope_ntk, chosen from the batch's first t like the official code.
    proportional_attention / base_seqlen: self-attention scale sqrt(log_base(N) / head_dim); the
      base defaults to the model's token count at its training resolution.
    features: per-call feature objects (lumina.features: regional prompts, style-shared attention,
      region-adaptive sampling), called through the hooks of lumina.model.hooks, in this order.
    rows: which user item and guidance half each model row is (None: each row its own
      conditional item); `lumina.sample` and the ComfyUI bridge set it with `batch_rows`.
    """

    rope_linear: float = 1.0
    rope_ntk: float = 1.0
    time_aware_scale: float | None = None
    time_aware_watershed: float = 0.3
    proportional_attention: bool = False
    base_seqlen: int | None = None
    features: tuple[ForwardFeature, ...] = ()
    rows: BatchRows | None = None

    def __post_init__(self) -> None:
        for name in ("rope_linear", "rope_ntk") + (("time_aware_scale",) if self.time_aware_scale is not None else ()):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LuminaInputError(f"ForwardOptions.{name}={value} must be a positive number (1 = no scaling)")
        if not (0.0 <= self.time_aware_watershed <= 1.0):
            raise LuminaInputError(f"ForwardOptions.time_aware_watershed={self.time_aware_watershed} must be a time in [0, 1]")
        if self.base_seqlen is not None and self.base_seqlen < 2:
            raise LuminaInputError(f"ForwardOptions.base_seqlen={self.base_seqlen} must be ≥ 2 tokens (proportional attention takes its log)")
        if not isinstance(self.features, tuple) or not all(isinstance(f, ForwardFeature) for f in self.features):
            raise TypeError(
                "ForwardOptions.features must be a tuple of lumina.features objects, e.g. features=(regions,); "
                f"got {self.features!r:.200}"
            )

    def rope_scaling(self, t: float) -> RopeScaling:
        if self.time_aware_scale is not None:
            return time_aware_scaling(self.time_aware_scale, self.time_aware_watershed, t)
        return RopeScaling(linear=self.rope_linear, ntk=self.rope_ntk)


DEFAULT_OPTIONS = ForwardOptions()
