"""Region-Adaptive Sampling (RAS, arXiv 2502.10389; reference code microsoft/RAS).

At a "sparse" model call only the patches in the model's focus go through the transformer; every
other patch reuses the velocity it had at the previous call. Focus is read from that previous
velocity: per patch, the spread of the velocity over the latent channels ("std", or "l2norm"),
times exp(starvation_scale · times the patch was already skipped). As in the reference code's
defaults (high_ratio 1) the patches with the HIGHEST score are the ones skipped (reused), and the
starvation factor then makes an often-skipped patch likelier to be skipped again; we reproduce
that rule rather than our reading of it. high_ratio 0 skips the lowest scores instead, where the
same factor works against starvation.

Flag-DiT's [nextline] tokens are computed at every call. Self-attention of the computed patches
still sees every patch: the keys and values of the skipped ones come from a per-layer cache,
filled at the dense call before a run of sparse calls and refreshed at the computed positions on
every sparse call ("key & value recovery"). Dense calls: the first `start_step` calls and the
`reset_steps` ("accumulated error resetting").

Everything here is per run: `RegionAdaptive.wrap` (a velocity wrapper given to `lumina.sample`)
makes a `RegionAdaptiveRun` for one sampling call; it owns the key/value cache and hands the
model a `SparseTokens` feature at every call; nothing is stored on the model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import LuminaInputError
from ..solvers import FIXED_STEP
from ..model.hooks import AttentionSite, ForwardFeature, ForwardHook, ForwardInfo, SelfAttentionKeys

if TYPE_CHECKING:  # annotations only: lumina.sampling names no feature
    from ..sampling import FeatureVelocityFn, SamplingPlan

METRICS = ("std", "l2norm")
FIXED_STEP_SOLVERS = tuple(FIXED_STEP)


@dataclass(frozen=True)
class RegionAdaptive:
    """RAS settings; the defaults are the reference code's (tuned there for 30 Euler steps).

    sample_ratio: share of patches recomputed at a sparse call (1 = RAS off).
    start_step: model calls (0-based) before the first sparse one; they run dense.
    reset_steps: model calls that run dense to reset the accumulated error.
    end_step: last call that may be sparse (None: to the end of sampling).
    metric: "std" (reference default) or "l2norm" of the velocity over the latent channels.
    high_ratio: share of the skipped patches taken from the highest scores, the rest from the
      lowest (reference default 1: skip the highest).
    starvation_scale: weight of how often a patch was skipped in its score.
    skip_ramp / skip_ramp_every: the reference's dynamic ratio ("skip_num_step" /
      "skip_num_step_length"): the number of reused patches changes by skip_ramp every
      skip_ramp_every calls, centred on the run, rounded down to a multiple of 64 (0 = a fixed
      number; its Lumina-Next example uses 256 every 4 calls at 1024², 4096 patches).
    """

    sample_ratio: float = 0.5
    start_step: int = 4
    reset_steps: tuple[int, ...] = (12, 22)
    end_step: int | None = None
    metric: str = "std"
    high_ratio: float = 1.0
    starvation_scale: float = 0.1
    skip_ramp: int = 0
    skip_ramp_every: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_ratio <= 1.0:
            raise LuminaInputError(
                f"region-adaptive sample_ratio={self.sample_ratio} must be in (0, 1]: the share of patches "
                "recomputed at each sparse step (0.5 by default, 1 = off)"
            )
        if self.metric not in METRICS:
            raise LuminaInputError(f"unknown region-adaptive metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if not 0.0 <= self.high_ratio <= 1.0:
            raise LuminaInputError(f"region-adaptive high_ratio={self.high_ratio} must be in [0, 1]")
        if self.start_step < 1:
            raise LuminaInputError(
                f"region-adaptive start_step={self.start_step} must be ≥ 1: the first call has no previous velocity to reuse"
            )
        if self.skip_ramp_every < 0:
            raise LuminaInputError(f"region-adaptive skip_ramp_every={self.skip_ramp_every} must be ≥ 0 (0 = no ramp)")
        if any(s < 0 for s in self.reset_steps) or (self.end_step is not None and self.end_step < 0):
            raise LuminaInputError("region-adaptive reset_steps and end_step count model calls from 0; negative values are not allowed")

    @property
    def enabled(self) -> bool:
        return self.sample_ratio < 1.0

    def skip_counts(self, patches: int, calls: int) -> list[int]:
        """How many of `patches` each of `calls` model calls reuses (0 at dense calls)."""
        average = int((1 - self.sample_ratio) * patches)
        every = self.skip_ramp_every
        if every:
            centre = ((calls + self.start_step) // every) // 2
            counts = [(average + self.skip_ramp * (c // every - centre)) // 64 * 64 for c in range(calls)]
        else:
            counts = [average] * calls
        h = self.high_ratio  # what select_patches takes from each end, after rounding
        counts = [int(n * h) + int(n * (1 - h)) if self.is_sparse(c) else 0 for c, n in enumerate(counts)]
        bad = [c for c, n in enumerate(counts) if not 0 <= n < patches]
        if bad:
            raise LuminaInputError(
                f"region-adaptive skip_ramp={self.skip_ramp} every {every} calls asks model call {bad[0]} to reuse "
                f"{counts[bad[0]]} of {patches} patches; lower skip_ramp (it suits 1024² images, 4096 patches) or set it to 0"
            )
        return counts

    def wrap(self, velocity: "FeatureVelocityFn", plan: "SamplingPlan") -> "FeatureVelocityFn":
        """A velocity wrapper for `lumina.sample(..., wrappers=[RegionAdaptive(...)])`: a fresh
        run over `plan`; bad solvers and ramps fail here, before any model call."""
        if not self.enabled:
            return velocity
        if plan.settings.solver not in FIXED_STEP_SOLVERS:
            raise LuminaInputError(
                f"region-adaptive sampling needs a fixed-step solver ({', '.join(FIXED_STEP_SOLVERS)}): "
                f"{plan.settings.solver} rejects and retries steps, so reused velocities would be out of date"
            )
        if len(plan.latent_shape) != 4:
            raise LuminaInputError(
                f"region-adaptive sampling runs on image latents (batch, channels, h, w), not the latent shape "
                f"{tuple(plan.latent_shape)} with frames; turn it off (sample_ratio=1) for videos and multi-view latents"
            )
        p = plan.patch_size
        patches = (plan.latent_shape[2] // p) * (plan.latent_shape[3] // p)
        skips = self.skip_counts(patches, plan.model_calls)
        if not any(skips):  # a valid run (a short test or preview), but never silently: say why it is dense
            warnings.warn(
                f"region-adaptive sampling computes every patch at all {plan.model_calls} model calls of this run "
                f"(start_step {self.start_step}, end_step {self.end_step}, reset_steps {list(self.reset_steps)}); "
                "lower start_step below the number of model calls to make it sparse",
                stacklevel=3,
            )
            return velocity
        return RegionAdaptiveRun(self, p, skips).wrap(velocity)

    def is_sparse(self, call: int) -> bool:
        """Whether model call `call` (0-based) runs on a subset of patches."""
        return (
            self.enabled and call >= self.start_step and call not in self.reset_steps
            and (self.end_step is None or call <= self.end_step)
        )


class KeyValueCache:
    """Every layer's self-attention keys and values, (B, L, KV, d), kept between model calls by
    one sampling run (recorded at a dense call, refreshed at the computed slots of sparse ones)."""

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def clear(self) -> None:
        self.keys.clear()
        self.values.clear()


@dataclass(frozen=True, eq=False)
class SparseTokens(ForwardFeature):
    """RAS at one model call, a per-call feature (`ForwardOptions.features`): the patches to compute
    per item (`active`, (items, n) patch indices in row-major order, None = all) and whether to
    record every layer's keys and values into the run's `cache` for the sparse calls to come."""

    active: Tensor | None = None
    record: bool = False
    cache: KeyValueCache = field(default_factory=KeyValueCache)

    def select_tokens(self, info: ForwardInfo) -> Tensor | None:
        """The computed sequence slots of each row: its item's active patches plus every
        [nextline] token; both CFG halves of an item compute the same patches."""
        layout = info.layout
        if layout is None or layout.frames != 1:
            raise LuminaInputError(
                "region-adaptive sampling runs on image latents of one size per batch; turn it off for videos or "
                "mixed sizes"
            )
        if self.active is None:
            return None
        if self.active.shape[0] != info.rows.item_count:
            raise LuminaInputError(
                f"region-adaptive sampling chose patches for {self.active.shape[0]} items but the model batch holds "
                f"{info.rows.item_count}"
            )
        device = info.device
        patches = self.active.to(device)[torch.tensor(info.rows.items, device=device)]
        slots = layout.patch_slots().to(device)[patches]
        specials = layout.special_slots().to(device)
        if specials.numel():
            slots = torch.cat([slots, specials.expand(slots.shape[0], -1)], dim=1).sort(dim=1).values
        return slots

    def begin(self, info: ForwardInfo) -> "SparseHook":
        return SparseHook(self.cache, self.record, info.active)


@dataclass
class SparseHook(ForwardHook):
    """Key & value recovery for one forward: a dense call keeps its own keys and values (stored
    when recording); a sparse call attends over the cache with its computed slots refreshed."""

    cache: KeyValueCache
    record: bool
    active: Tensor | None  # (B, n) computed sequence slots; None = a dense call

    def self_attention_keys(self, site: AttentionSite, keys: SelfAttentionKeys) -> SelfAttentionKeys:
        k, v = keys.k, keys.v
        layer, cache = site.layer, self.cache
        if self.active is None:
            if self.record:
                cache.keys[layer], cache.values[layer] = k, v
            return keys
        if layer not in cache.keys:
            raise RuntimeError("a sparse call ran before any dense call recorded keys and values")
        cache_k, cache_v = cache.keys[layer], cache.values[layer]
        if cache_k.shape[0] != k.shape[0]:
            raise LuminaInputError(
                f"region-adaptive sampling saw batch {k.shape[0]} after recording batch {cache_k.shape[0]}; "
                "keep one batch size for the whole run"
            )
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        cache_k[rows, self.active] = k
        cache_v[rows, self.active] = v
        return replace(keys, k=cache_k, v=cache_v, k_unrotated=None)


def patch_scores(velocity: Tensor, patch_size: int, metric: str) -> Tensor:
    """(B, C, H, W) velocity → (B, H/p · W/p) focus scores in row-major patch order: the
    per-pixel spread over channels, averaged over each patch."""
    if metric == "std":
        per_pixel = velocity.float().std(dim=1)
    else:
        per_pixel = velocity.float().norm(dim=1)
    b, h, w = per_pixel.shape
    p = patch_size
    return per_pixel.view(b, h // p, p, w // p, p).mean(dim=(2, 4)).flatten(1)


def select_patches(
    scores: Tensor, skipped_count: Tensor, skip: int, starvation_scale: float, high_ratio: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Per row of (B, P) scores: (active, skipped) patch indices, (B, P − n) and (B, n).

    Scores are weighted by exp(starvation_scale · skipped_count) and ranked; int(skip · high_ratio)
    patches are skipped from the top of the ranking and int(skip · (1 − high_ratio)) from the
    bottom, the reference code's rule. Active indices come back sorted by position."""
    weighted = scores * torch.exp(starvation_scale * skipped_count)
    order = torch.argsort(weighted, dim=1)
    total = order.shape[1]
    low, high = int(skip * (1 - high_ratio)), int(skip * high_ratio)
    skipped = torch.cat([order[:, :low], order[:, total - high :]], dim=1)
    return order[:, low : total - high].sort(dim=1).values, skipped


class RegionAdaptiveRun:
    """The state of RAS over one sampling run; wraps a velocity callable that takes per-call
    features (`lumina.sampling.guided_velocity`). It owns the key/value cache and gives each
    model call a `SparseTokens` feature. Each item of the batch picks its own patches; the two
    CFG halves of an item share them."""

    def __init__(self, settings: RegionAdaptive, patch_size: int, skips: list[int]) -> None:
        """skips: patches each model call reuses, `settings.skip_counts(patches, calls)`."""
        self.settings = settings
        self.patch_size = patch_size
        self._skips = skips
        self.cache = KeyValueCache()
        self.calls = 0
        self.computed: list[int] = []  # patches computed at each call (for tests and reports)
        self._last: Tensor | None = None
        self._skipped_count: Tensor | None = None
        self._active: Tensor | None = None
        self._active_pixels: Tensor | None = None

    def wrap(self, velocity: "FeatureVelocityFn") -> "FeatureVelocityFn":
        def region_adaptive_velocity(x: Tensor, t: Tensor, features: tuple = ()) -> Tensor:
            return self._call(velocity, x, t, features)

        return region_adaptive_velocity

    def _call(self, velocity: "FeatureVelocityFn", x: Tensor, t: Tensor, features: tuple) -> Tensor:
        call, s, p = self.calls, self.settings, self.patch_size
        self.calls += 1
        patches = (x.shape[-2] // p) * (x.shape[-1] // p)
        skip = self._skips[call + 1] if call + 1 < len(self._skips) else 0
        sparse_now = self._active is not None
        sparse_next = skip > 0
        tokens = SparseTokens(self._active if sparse_now else None, sparse_next and not sparse_now, self.cache)
        if not (sparse_now or sparse_next):  # no cache needed beyond this call
            self.cache.clear()
        out = velocity(x, t, (*features, tokens))
        if sparse_now:
            out = torch.where(self._active_pixels, out, self._last)
        self.computed.append(int(self._active.shape[1]) if sparse_now else patches)

        if sparse_next:
            b = out.shape[0]
            if self._skipped_count is None:
                self._skipped_count = torch.zeros(b, patches, device=out.device)
            active, skipped = select_patches(
                patch_scores(out, p, s.metric), self._skipped_count, skip, s.starvation_scale, s.high_ratio
            )
            self._skipped_count.scatter_add_(1, skipped, torch.ones_like(skipped, dtype=self._skipped_count.dtype))
            self._active = active
            grid = torch.zeros(b, patches, dtype=torch.bool, device=out.device)
            grid.scatter_(1, active, True)
            rows, cols = x.shape[-2] // p, x.shape[-1] // p
            self._active_pixels = (
                grid.view(b, 1, rows, 1, cols, 1).expand(b, 1, rows, p, cols, p).reshape(b, 1, rows * p, cols * p)
            )
            self._last = out
        else:
            self._active, self._active_pixels, self._last = None, None, None
        return out
