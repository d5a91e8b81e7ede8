"""Per-call forward options. Passed with each call, never stored on the model, so one loaded
model serves many samplers and nodes with different settings at once."""

from __future__ import annotations

from dataclasses import dataclass

from ..features.compositional import RegionalPrompts
from ..features.region_adaptive import SparseTokens
from ..features.style_shared import SharedAttention
from .rope import RopeScaling, time_aware_scaling


@dataclass(frozen=True)
class ForwardOptions:
    """Resolution-extrapolation knobs of the official code.

    rope_linear / rope_ntk: Flag-DiT `rope_scaling_factor` / `ntk_factor` (also valid for Next-DiT).
    time_aware_scale / time_aware_watershed: Next-DiT `scale_factor` / `scale_watershed`; when set they
      replace rope_linear / rope_ntk, chosen from the batch's first t like the official code.
    proportional_attention / base_seqlen: self-attention scale sqrt(log_base(N) / head_dim); the
      base defaults to the model's token count at its training resolution.
    regions: compositional generation (lumina.features.compositional).
    shared_attention: style-consistent batches (lumina.features.style_shared).
    sparse: region-adaptive sampling's per-run token subset and key/value cache
      (lumina.features.region_adaptive); set by `lumina.sample`, images only.
    """

    rope_linear: float = 1.0
    rope_ntk: float = 1.0
    time_aware_scale: float | None = None
    time_aware_watershed: float = 0.3
    proportional_attention: bool = False
    base_seqlen: int | None = None
    regions: RegionalPrompts | None = None
    shared_attention: SharedAttention | None = None
    sparse: SparseTokens | None = None

    def rope_scaling(self, t: float) -> RopeScaling:
        if self.time_aware_scale is not None:
            return time_aware_scaling(self.time_aware_scale, self.time_aware_watershed, t)
        return RopeScaling(linear=self.rope_linear, ntk=self.rope_ntk)


DEFAULT_OPTIONS = ForwardOptions()
