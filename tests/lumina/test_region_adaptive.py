"""Region-Adaptive Sampling: the sparse forward, the patch selection, the call schedule, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import lumina
from lumina.errors import LuminaInputError
from lumina.features.region_adaptive import (
    KeyValueCache, RegionAdaptive, RegionAdaptiveRun, SparseTokens, patch_scores, select_patches,
)
from lumina.model.hooks import batch_rows
from lumina.features import RegionalPrompts, grid_masks
from lumina.model import ForwardOptions

from lumina_support import tiny_random_model

EXTRAPOLATING = ForwardOptions(proportional_attention=True, base_seqlen=16, time_aware_scale=2.0)


def _inputs(batch: int = 2, h: int = 16, w: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, h, w, generator=g), torch.rand(batch, generator=g), torch.randn(batch, 5, 16, generator=g)


def _pixels(active_row: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    mask = torch.zeros(rows * cols, dtype=torch.bool)
    mask[active_row] = True
    return mask.view(rows, 1, cols, 1).expand(rows, 2, cols, 2).reshape(rows * 2, cols * 2)


@pytest.mark.parametrize("family", ["next_dit", "flag_dit"])
@pytest.mark.parametrize("options", [ForwardOptions(), EXTRAPOLATING], ids=["plain", "extrapolating"])
def test_sparse_forward_equals_the_full_forward_on_the_computed_patches(options, family):
    """With keys/values recorded from the same input, computing a subset of patches gives exactly
    the full forward's velocity there (self-attention still sees every patch and, for Flag-DiT,
    every [nextline] token) and zeros elsewhere."""
    if family == "flag_dit":
        options = replace(options, time_aware_scale=None, rope_ntk=2.0)
    model = tiny_random_model(family, n_layers=3)
    x, t, cap = _inputs()
    with torch.no_grad():
        full = model(x, t, cap, None, options)
        cache = KeyValueCache()
        recorded = model(x, t, cap, None, replace(options, features=(SparseTokens(record=True, cache=cache),)))
        assert torch.equal(recorded, full)
        assert sorted(cache.keys) == [0, 1, 2]
        g = torch.Generator().manual_seed(5)
        tokens = SparseTokens(torch.stack([torch.randperm(48, generator=g)[:11].sort().values for _ in range(2)]), cache=cache)
        sparse = model(x, t, cap, None, replace(options, features=(tokens,)))
    for row in range(2):
        pix = _pixels(tokens.active[row], 8, 6)
        torch.testing.assert_close(sparse[row][:, pix], full[row][:, pix], rtol=0, atol=1e-6)
        assert sparse[row][:, ~pix].abs().max() == 0


def test_sparse_forward_keeps_regional_prompts_per_patch():
    model = tiny_random_model("next_dit", n_layers=2)
    x, t, cap = _inputs()
    g = torch.Generator().manual_seed(3)
    regions = RegionalPrompts(
        cap_feats=torch.randn(2, 4, 16, generator=g), cap_mask=torch.ones(2, 4, dtype=torch.bool), masks=grid_masks(1, 2, 16, 12), rows=(1,)
    )
    options = ForwardOptions(features=(regions,))
    with torch.no_grad():
        full = model(x, t, cap, None, options)
        cache = KeyValueCache()
        model(x, t, cap, None, replace(options, features=(regions, SparseTokens(record=True, cache=cache))))
        tokens = SparseTokens(torch.tensor([[0, 5, 9, 30, 47], [1, 2, 3, 24, 40]]), cache=cache)
        sparse = model(x, t, cap, None, replace(options, features=(regions, tokens)))
    for row in range(2):
        pix = _pixels(tokens.active[row], 8, 6)
        torch.testing.assert_close(sparse[row][:, pix], full[row][:, pix], rtol=1e-5, atol=1e-5)


def test_items_choose_patches_that_both_cfg_halves_share():
    """Item i's patches are computed in its conditional and its unconditional row, whichever
    half ComfyUI or lumina.sample puts first; a batch of other items is refused."""
    model = tiny_random_model("next_dit", n_layers=1)
    x, t, cap = _inputs(batch=4, h=4, w=4)
    tokens = SparseTokens(active=torch.tensor([[0, 1], [2, 3]]))
    for halves in [(True, False), (False, True)]:
        options = ForwardOptions(features=(tokens,), rows=batch_rows(2, halves))
        info = lumina.model.hooks.ForwardInfo(model, model.token_layout(1, 2, 2), options.rows, None, torch.float32, x.device)
        assert tokens.select_tokens(info).tolist() == [[0, 1], [2, 3], [0, 1], [2, 3]]
    info = lumina.model.hooks.ForwardInfo(model, model.token_layout(1, 2, 2), batch_rows(3), None, torch.float32, x.device)
    with pytest.raises(LuminaInputError, match="chose patches for 2 items but the model batch holds 3"):
        tokens.select_tokens(info)


def test_scores_are_the_channel_spread_averaged_per_patch():
    v = torch.zeros(1, 4, 4, 4)
    v[0, :, :2, 2:] = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None, None]  # top-right patch spreads
    v[0, 0, 3, 0] = 2.0  # one pixel of the bottom-left patch
    std = patch_scores(v, 2, "std")
    assert std.shape == (1, 4)
    expected_pixel = torch.tensor([2.0, 0, 0, 0]).std()
    torch.testing.assert_close(std[0], torch.tensor([0.0, torch.tensor([1.0, -1, 1, -1]).std(), expected_pixel / 4, 0.0]))
    l2 = patch_scores(v, 2, "l2norm")
    torch.testing.assert_close(l2[0], torch.tensor([0.0, 2.0, 0.5, 0.0]))


def test_selection_skips_the_highest_scores_and_starvation_weights_them():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    active, skipped = select_patches(scores, torch.zeros(1, 5), 2, 0.1)
    assert active.tolist() == [[0, 2, 3]] and sorted(skipped[0].tolist()) == [1, 4]
    # weighting by exp(0.1 · count): patch 2 skipped 6 times scores 0.5 · e^0.6 = 0.91, above
    # patch 4's 0.7 · e^0.1 = 0.77, so it is skipped again
    count = torch.tensor([[0.0, 0.0, 6.0, 0.0, 1.0]])
    active, skipped = select_patches(scores, count, 2, 0.1)
    assert sorted(skipped[0].tolist()) == [1, 2]
    low_active, low_skipped = select_patches(scores, torch.zeros(1, 5), 2, 0.1, high_ratio=0.0)
    assert sorted(low_skipped[0].tolist()) == [0, 3] and low_active.tolist() == [[1, 2, 4]]
    _, mixed = select_patches(scores, torch.zeros(1, 5), 2, 0.1, high_ratio=0.5)
    assert sorted(mixed[0].tolist()) == [0, 1]


def _sampling_setup(batch: int = 1):
    model = tiny_random_model("next_dit", n_layers=2)
    g = torch.Generator().manual_seed(7)
    cond = lumina.Conditioning(torch.randn(batch, 5, 16, generator=g), torch.ones(batch, 5, dtype=torch.bool))
    uncond = lumina.Conditioning(torch.randn(1, 5, 16, generator=g), torch.ones(1, 5, dtype=torch.bool))
    return model, cond, uncond


def test_ratio_one_is_plain_sampling():
    model, cond, uncond = _sampling_setup()
    plain = lumina.sample(model, cond, uncond, (1, 4, 16, 16), steps=10, seed=1)
    off = lumina.sample(model, cond, uncond, (1, 4, 16, 16), steps=10, seed=1, wrappers=[RegionAdaptive(1.0)])
    assert torch.equal(plain, off)


def test_model_calls_follow_the_dense_and_sparse_schedule():
    """Calls before start_step, the reset calls and those after end_step run every patch; the
    others run half of them, for both CFG halves of every item."""
    model, cond, uncond = _sampling_setup(batch=2)
    seen: list[tuple[int, int]] = []
    hook = model.layers[0].register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[:2])))
    settings = RegionAdaptive(0.5, start_step=4, reset_steps=(7,), end_step=10)
    try:
        lumina.sample(model, cond, uncond, (2, 4, 16, 16), steps=13, step_convention="model_steps", seed=1, wrappers=[settings])
    finally:
        hook.remove()
    expected = [64 if c < 4 or c == 7 or c > 10 else 32 for c in range(13)]
    assert seen == [(4, n) for n in expected]


def test_midpoint_counts_both_evaluations_of_a_step():
    """Two model calls per midpoint step: 10 steps are 20 calls, scheduled like 20 Euler steps."""
    model, cond, uncond = _sampling_setup()
    seen: list[int] = []
    hook = model.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        lumina.sample(model, cond, uncond, (1, 4, 16, 16), steps=10, step_convention="model_steps", solver="midpoint",
                      wrappers=[RegionAdaptive(0.75, start_step=3, reset_steps=(10,))])
    finally:
        hook.remove()
    assert seen == [64 if c < 3 or c == 10 else 48 for c in range(20)]


def test_sparse_calls_reuse_the_previous_velocity_off_the_chosen_patches():
    calls, given = [], []

    def velocity(x, t, features=()):
        calls.append(float(t))
        given.append(features[-1])
        return torch.full_like(x, float(len(calls)))

    settings = RegionAdaptive(0.5, start_step=1, reset_steps=())
    run = RegionAdaptiveRun(settings, 2, settings.skip_counts(4, 3))
    v = run.wrap(velocity)
    x = torch.zeros(1, 4, 4, 4)
    first = v(x, torch.tensor(0.0))
    assert run.computed == [4] and given[0].record and given[0].active is None and given[0].cache is run.cache
    second = v(x, torch.tensor(0.5))
    tokens = given[1]
    assert tokens.active is not None and tokens.active.shape == (1, 2) and run.computed == [4, 2] and not tokens.record
    pix = _pixels(tokens.active[0], 2, 2)
    assert (second[0][:, pix] == 2).all() and (second[0][:, ~pix] == first[0][:, ~pix]).all()


def test_region_adaptive_sampling_stays_near_dense_sampling():
    """At ratio 0.9 few patches are reused; the result stays close to dense sampling, and reusing
    more (ratio 0.5) moves it further away."""
    model, cond, uncond = _sampling_setup()
    kwargs = dict(steps=30, step_convention="model_steps", seed=3, cfg=2.0)
    dense = lumina.sample(model, cond, uncond, (1, 4, 16, 16), **kwargs)
    near = lumina.sample(model, cond, uncond, (1, 4, 16, 16), wrappers=[RegionAdaptive(0.9)], **kwargs)
    far = lumina.sample(model, cond, uncond, (1, 4, 16, 16), wrappers=[RegionAdaptive(0.5)], **kwargs)
    near_err, far_err = ((near - dense).norm() / dense.norm()).item(), ((far - dense).norm() / dense.norm()).item()
    assert 0 < near_err < far_err


def test_skip_counts_follow_the_reference_schedules():
    static = RegionAdaptive(0.5, start_step=2, reset_steps=(4,)).skip_counts(16, 6)
    assert static == [0, 0, 8, 8, 0, 8]
    # the reference Lumina-Next example: 1024², ratio 0.5, ramp 256 every 4 calls, 30 Euler steps
    ramp = RegionAdaptive(0.5, skip_ramp=256, skip_ramp_every=4).skip_counts(4096, 30)
    expected = [0] * 4 + [1280] * 4 + [1536] * 4 + [0] + [1792] * 3 + [2048] * 4 + [2304] * 2 + [0] + [2304] + [2560] * 4 + [2816] * 2
    assert ramp == expected
    with pytest.raises(LuminaInputError, match="skip_ramp=256 every 4 calls asks model call 4 to reuse -768 of 64 patches"):
        RegionAdaptive(0.5, skip_ramp=256, skip_ramp_every=4).skip_counts(64, 30)


def test_a_ramp_too_steep_for_the_image_fails_before_sampling():
    model, cond, uncond = _sampling_setup()
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    with pytest.raises(LuminaInputError, match="lower skip_ramp"):
        lumina.sample(model, cond, uncond, (1, 4, 16, 16), steps=30, wrappers=[RegionAdaptive(skip_ramp=256, skip_ramp_every=4)])
    hook.remove()
    assert not calls


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sample_ratio=0.0), "sample_ratio=0.0 must be in"),
        (dict(sample_ratio=1.5), "sample_ratio=1.5 must be in"),
        (dict(metric="mean"), "unknown region-adaptive metric 'mean'"),
        (dict(start_step=0), "start_step=0 must be ≥ 1"),
        (dict(high_ratio=2.0), "high_ratio=2.0"),
        (dict(reset_steps=(-1,)), "negative"),
        (dict(skip_ramp_every=-4), "skip_ramp_every=-4"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, match):
    with pytest.raises(LuminaInputError, match=match):
        RegionAdaptive(**kwargs)


def test_flag_dit_computes_its_nextline_tokens_at_every_call():
    model = tiny_random_model("flag_dit", n_layers=2)
    g = torch.Generator().manual_seed(7)
    cond = lumina.Conditioning(torch.randn(1, 5, 16, generator=g), torch.ones(1, 5, dtype=torch.bool))
    seen: list[int] = []
    hook = model.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        lumina.sample(model, cond, None, (1, 4, 16, 16), steps=6, step_convention="model_steps",
                      wrappers=[RegionAdaptive(0.5, start_step=2, reset_steps=(4,))])
    finally:
        hook.remove()
    full = 8 * 9  # 8 rows of 8 patches and a [nextline] token
    assert seen == [full, full, 32 + 8, 32 + 8, full, 32 + 8]


def test_dopri5_and_mixed_sizes_are_refused_clearly():
    model, cond, uncond = _sampling_setup()
    with pytest.raises(LuminaInputError, match="fixed-step solver"):
        lumina.sample(model, cond, uncond, (1, 4, 16, 16), solver="dopri5", wrappers=[RegionAdaptive()])
    with pytest.raises(LuminaInputError, match="one size per batch"):
        x, t, cap = _inputs()
        model([x[0], x[1, :, :8]], t, cap, None, ForwardOptions(features=(SparseTokens(),)))


def test_style_shared_attention_with_sparse_calls_is_refused_clearly():
    from lumina.features import SharedAttention

    model = tiny_random_model("next_dit", n_layers=1)
    x, t, cap = _inputs()
    tokens = SparseTokens(torch.tensor([[0, 1], [2, 3]]), cache=KeyValueCache())
    with pytest.raises(LuminaInputError, match="style-shared attention needs every token of the reference"):
        model(x, t, cap, None, ForwardOptions(features=(tokens, SharedAttention())))


def test_only_one_feature_may_narrow_the_tokens():
    model = tiny_random_model("next_dit", n_layers=1)
    x, t, cap = _inputs()
    tokens = SparseTokens(torch.tensor([[0, 1], [2, 3]]), cache=KeyValueCache())
    with pytest.raises(LuminaInputError, match="only one feature may narrow the computed tokens, got SparseTokens, SparseTokens"):
        model(x, t, cap, None, ForwardOptions(features=(tokens, tokens)))


def test_a_run_where_no_call_could_be_sparse_says_so_and_runs_dense():
    model, cond, uncond = _sampling_setup()
    kwargs = dict(steps=5, step_convention="model_steps", seed=2)
    with pytest.warns(UserWarning, match=r"computes every patch at all 5 model calls .* lower start_step"):
        ras = lumina.sample(model, cond, uncond, (1, 4, 16, 16), wrappers=[RegionAdaptive(0.5, start_step=8)], **kwargs)
    assert torch.equal(ras, lumina.sample(model, cond, uncond, (1, 4, 16, 16), **kwargs))
