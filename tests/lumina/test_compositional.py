"""Compositional generation: each regional caption is cross-attended only by its region's tokens,
self-attention stays global, uncovered tokens keep the global caption, CFG rows are mapped.

Every model test runs on both families (`tiny_model`). Locality is checked at the attention
level: the recorder captures each layer's attention inputs and its final cross-attention output
(B, L, H, head_dim), and each layer's attention module is called directly with the same inputs
and only one region's caption changed.
"""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina import ForwardOptions, LuminaInputError
from lumina.conditioning import Conditioning
from lumina.features.compositional import (
    RegionalPrompts,
    box_mask,
    grid_masks,
    patch_weights,
)
from lumina.model.hooks import batch_rows

CAP_WIDTH = 16


# -- helpers ------------------------------------------------------------------------------

def model_inputs(batch: int = 1, h: int = 8, w: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, t, cap_feats) for a forward of `batch` latents of h × w."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, h, w, generator=g), 0.1 + 0.8 * torch.rand(batch, generator=g), torch.randn(batch, 5, CAP_WIDTH, generator=g)


def region_prompts(masks: torch.Tensor, seed: int = 2, rows: tuple[int, ...] | None = None, length: int = 4) -> RegionalPrompts:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(masks.shape[0], length, CAP_WIDTH, generator=g)
    return RegionalPrompts(feats, torch.ones(masks.shape[0], length, dtype=torch.bool), masks, rows)


def with_new_caption(regions: RegionalPrompts, region: int, seed: int = 99) -> RegionalPrompts:
    """The same regions with region `region`'s caption features redrawn."""
    feats = regions.cap_feats.clone()
    feats[region] = torch.randn(feats.shape[1:], generator=torch.Generator().manual_seed(seed))
    return RegionalPrompts(feats, regions.cap_mask, regions.masks, regions.rows)


def expected_token_weights(model: lumina.LuminaDiT, masks: torch.Tensor) -> torch.Tensor:
    """(R, L) weight of each token per region for latent-resolution masks, derived independently
    of the model: each patch's mean coverage, scaled to sum to 1 where regions overlap beyond 1;
    tokens row-major, and Flag-DiT's [nextline] closing every row weighs 0 for every region."""
    p = model.config.patch_size
    r, h, w = masks.shape
    per_patch = masks.float().reshape(r, h // p, p, w // p, p).mean((2, 4))
    total = per_patch.sum(0, keepdim=True)
    per_patch = torch.where(total > 1, per_patch / total, per_patch)
    if model.family == "flag_dit":
        per_patch = torch.cat([per_patch, torch.zeros(r, h // p, 1)], dim=2)
    return per_patch.reshape(r, -1)


def token_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, L, ...) pair → (B, L) largest absolute difference per token."""
    return (a - b).abs().flatten(2).amax(-1)


def latent_diff(model: lumina.LuminaDiT, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) outputs → (B, H/p·W/p) largest absolute difference per patch, row-major."""
    p = model.config.patch_size
    d = (a - b).abs()
    bsz, c, h, w = d.shape
    return d.reshape(bsz, c, h // p, p, w // p, p).amax((1, 3, 5)).reshape(bsz, -1)


def patch_tokens(model: lumina.LuminaDiT, h: int, w: int) -> torch.Tensor:
    """(rows·cols,) sequence index of every image patch (Flag-DiT skips its [nextline] slots)."""
    p = model.config.patch_size
    rows, cols = h // p, w // p
    row_length = cols + (model.family == "flag_dit")
    return (torch.arange(rows)[:, None] * row_length + torch.arange(cols)).flatten()


# Latent sizes and masks the locality checks run over: halves, a 2×2 grid, a 3×1 grid on a
# non-square latent (with soft patch weights where its edges split a patch) and a 1×3 grid.
LAYOUTS = {
    "halves_8x8": (8, 8, lambda: grid_masks(1, 2, 8, 8)),
    "grid2x2_8x8": (8, 8, lambda: grid_masks(2, 2, 8, 8)),
    "grid2x2_8x12": (8, 12, lambda: grid_masks(2, 2, 8, 12)),
    "grid3x1_8x12": (8, 12, lambda: grid_masks(3, 1, 8, 12)),
    "grid1x3_12x8": (12, 8, lambda: grid_masks(1, 3, 12, 8)),
}


# -- token weights --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_region_weights_follow_the_token_layout(tiny_model, attention_recorder, layout):
    h, w, masks = LAYOUTS[layout]
    masks = masks()
    x, t, cap = model_inputs(h=h, w=w)
    _, calls = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(region_prompts(masks),)))
    rg = calls[0].regional
    expected = expected_token_weights(tiny_model, masks)
    torch.testing.assert_close(rg.weights, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(rg.global_weight, 1 - expected.sum(0), atol=1e-6, rtol=0)
    assert rg.rows.tolist() == [0]
    assert all(c.regional is rg for c in calls)


def test_grid_2x2_gives_four_distinct_quadrants(tiny_model, attention_recorder):
    """The official code's region ids collide on a 2×2 grid; here every quadrant is its own region."""
    x, t, cap = model_inputs()
    _, calls = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(region_prompts(grid_masks(2, 2, 8, 8)),)))
    weights = calls[0].regional.weights[:, patch_tokens(tiny_model, 8, 8)].reshape(4, 4, 4)  # (region, row, col)
    quadrants = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2)), (slice(2, 4), slice(2, 4))]
    for r, (ys, xs) in enumerate(quadrants):
        inside = torch.zeros(4, 4, dtype=torch.bool)
        inside[ys, xs] = True
        assert bool((weights[r][inside] == 1).all()) and bool((weights[r][~inside] == 0).all())
    assert bool((calls[0].regional.global_weight[patch_tokens(tiny_model, 8, 8)] == 0).all())


# -- locality of the regional captions ------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_region_caption_changes_only_its_tokens_cross_attention_at_every_layer(tiny_model, attention_recorder, layout):
    """Changing region B's caption changes no cross-attention output outside B, at every layer,
    and changes it at every token inside B. Layer 0 is checked end to end (both forwards feed it
    the same input); every layer is checked by calling its attention module with the recorded
    inputs of the first forward and the region captions of either forward."""
    h, w, masks = LAYOUTS[layout]
    masks = masks()
    x, t, cap = model_inputs(h=h, w=w)
    regions = region_prompts(masks)
    _, calls_a = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(regions,)))
    weights = expected_token_weights(tiny_model, masks)
    for b in range(masks.shape[0]):
        _, calls_b = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(with_new_caption(regions, b),)))
        inside = weights[b] > 0
        assert bool(inside.any()) and not bool(inside.all())

        torch.testing.assert_close(calls_b[0].x, calls_a[0].x, atol=0, rtol=0)
        diff = token_diff(calls_b[0].cross, calls_a[0].cross)[0]
        assert diff[~inside].max() <= 1e-6, f"layer 0: region {b}'s caption reached tokens outside it"
        assert diff[inside].min() > 1e-6, f"layer 0: some tokens of region {b} ignore its caption"

        for layer, (a, changed) in enumerate(zip(calls_a, calls_b)):
            assert a.layer == changed.layer == layer
            assert not torch.equal(a.regional.cap_feats[b], changed.regional.cap_feats[b])
            same = attention_recorder.call(layer, *a.inputs)
            other = attention_recorder.call(layer, *a.inputs_with_hooks(changed.regional))
            torch.testing.assert_close(same.cross, a.cross, atol=0, rtol=0)
            diff = token_diff(other.cross, same.cross)[0]
            assert diff[~inside].max() <= 1e-6, f"layer {layer}: region {b}'s caption reached tokens outside it"
            assert diff[inside].min() > 1e-6, f"layer {layer}: some tokens of region {b} ignore its caption"
            # wo mixes heads, never tokens: the attention output itself is just as local
            out_diff = token_diff(other.output, same.output)[0]
            assert out_diff[~inside].max() <= 1e-6 and out_diff[inside].min() > 1e-6


def test_self_attention_stays_global(tiny_model, attention_recorder):
    """Region B's caption reaches tokens outside B only through self-attention: outside B, layer
    0 is untouched (cross-attention and output), layer 1 gets the same input and the same
    cross-attention yet a different output (it attends to B's changed tokens), and the final
    output changes at every patch, so the image stays one image."""
    x, t, cap = model_inputs()
    regions = region_prompts(grid_masks(1, 2, 8, 8))
    out_a, calls_a = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(regions,)))
    out_b, calls_b = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(with_new_caption(regions, 1),)))
    outside = expected_token_weights(tiny_model, regions.masks)[1] == 0
    layer0, layer1 = (token_diff(calls_b[i].output, calls_a[i].output)[0][outside] for i in range(2))
    assert token_diff(calls_b[0].cross, calls_a[0].cross)[0][outside].max() <= 1e-6
    assert layer0.max() <= 1e-6
    assert token_diff(calls_b[1].x, calls_a[1].x)[0][outside].max() <= 1e-6
    assert token_diff(calls_b[1].cross, calls_a[1].cross)[0][outside].max() <= 1e-6
    assert layer1.min() > 1e-6, "layer 1's self-attention did not carry region B to the other tokens"

    left_half = torch.zeros(4, 4, dtype=torch.bool)
    left_half[:, :2] = True
    final = latent_diff(tiny_model, out_b, out_a)[0]
    assert final[left_half.flatten()].min() > 1e-6, "tokens outside region B never saw its caption"


def test_uncovered_tokens_use_the_global_caption(tiny_model, attention_recorder):
    """With one region on the left half, right-half tokens (and Flag-DiT's [nextline] tokens)
    get exactly the plain cross-attention to the row's own caption, at every layer."""
    x, t, cap = model_inputs()
    masks = box_mask(8, 8, 0, 0, 8, 4)[None]
    _, plain = attention_recorder.run(x, t, cap)
    _, regional = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(region_prompts(masks),)))
    uncovered = expected_token_weights(tiny_model, masks).sum(0) == 0
    assert int(uncovered.sum()) == (8 if tiny_model.family == "next_dit" else 12)

    torch.testing.assert_close(regional[0].x, plain[0].x, atol=0, rtol=0)
    diff = token_diff(regional[0].cross, plain[0].cross)[0]
    assert diff[uncovered].max() <= 1e-6 and diff[~uncovered].min() > 1e-6
    for layer, call in enumerate(regional):
        without = attention_recorder.call(layer, *call.inputs_with_hooks())
        diff = token_diff(call.cross, without.cross)[0]
        assert diff[uncovered].max() <= 1e-6, f"layer {layer}: uncovered tokens lost the global caption"
        assert diff[~uncovered].min() > 1e-6


def test_soft_mask_mixes_region_and_global_caption_by_weight(tiny_model, attention_recorder):
    """A mask of 0.3 everywhere gives 0.3 × (the region caption's answer) + 0.7 × (the global one)."""
    x, t, cap = model_inputs()
    regions = region_prompts(torch.ones(1, 8, 8))
    soft = RegionalPrompts(regions.cap_feats, regions.cap_mask, torch.full((1, 8, 8), 0.3))
    _, plain = attention_recorder.run(x, t, cap)
    _, full = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(regions,)))
    _, mixed = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(soft,)))
    patches = patch_tokens(tiny_model, 8, 8)
    expected = 0.3 * full[0].cross + 0.7 * plain[0].cross
    torch.testing.assert_close(mixed[0].cross[:, patches], expected[:, patches], atol=1e-5, rtol=1e-5)


def test_overlapping_soft_masks_keep_token_weights_at_most_one(tiny_model, attention_recorder):
    x, t, cap = model_inputs()
    masks = torch.stack([box_mask(8, 8, 0, 0, 6, 6) * 0.8, box_mask(8, 8, 2, 2, 6, 6) * 0.7, torch.full((8, 8), 0.25)])
    out, calls = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(region_prompts(masks),)))
    rg = calls[0].regional
    assert bool((rg.weights >= 0).all()) and float(rg.weights.sum(0).max()) <= 1 + 1e-6
    assert bool((rg.global_weight >= -1e-6).all())
    torch.testing.assert_close(rg.weights, expected_token_weights(tiny_model, masks), atol=1e-6, rtol=0)
    assert bool(torch.isfinite(out).all())


def test_patch_weights_scale_overlaps_down_to_one():
    masks = torch.stack([box_mask(8, 8, 0, 0, 6, 6) * 0.8, box_mask(8, 8, 2, 2, 6, 6) * 0.7, torch.full((8, 8), 0.1)])
    weights = patch_weights(masks, 8, 8, 2)
    assert weights.shape == (3, 4, 4)
    total = weights.sum(0)
    assert float(total.max()) <= 1 + 1e-6 and float(weights.min()) >= 0
    # where the raw coverage sums to ≤ 1 nothing is rescaled (top-left patch: 0.8 + 0.1)
    torch.testing.assert_close(weights[:, 0, 0], torch.tensor([0.8, 0.0, 0.1]))
    # where it exceeds 1 the weights keep their proportions (centre patch: 0.8, 0.7, 0.1)
    torch.testing.assert_close(weights[:, 1, 1], torch.tensor([0.8, 0.7, 0.1]) / 1.6)


def test_patch_weights_resize_masks_to_the_latent():
    """Masks may be drawn at any resolution (e.g. image pixels); boxes on patch edges survive."""
    fine = torch.stack([box_mask(32, 48, 0, 0, 16, 24), box_mask(32, 48, 16, 24, 16, 24)])
    coarse = torch.stack([box_mask(8, 12, 0, 0, 4, 6), box_mask(8, 12, 4, 6, 4, 6)])
    torch.testing.assert_close(patch_weights(fine, 8, 12, 2), patch_weights(coarse, 8, 12, 2), atol=1e-6, rtol=0)


def test_grid_masks_cover_the_latent_once():
    for rows, cols, h, w in [(2, 2, 8, 8), (3, 1, 8, 12), (1, 3, 12, 8), (3, 5, 16, 24)]:
        masks = grid_masks(rows, cols, h, w)
        assert masks.shape == (rows * cols, h, w)
        assert torch.equal(masks.sum(0), torch.ones(h, w))
        assert bool((masks.flatten(1).sum(1) > 0).all())


# -- masks that do nothing ------------------------------------------------------------------

def test_all_zero_masks_change_nothing(tiny_model):
    x, t, cap = model_inputs(batch=2)
    with torch.no_grad():
        plain = tiny_model(x, t, cap)
        zero = tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(torch.zeros(2, 8, 8)),)))
    torch.testing.assert_close(zero, plain, atol=1e-6, rtol=0)


def test_zero_mask_region_caption_is_ignored(tiny_model):
    x, t, cap = model_inputs()
    masks = torch.stack([box_mask(8, 8, 0, 0, 8, 4), torch.zeros(8, 8)])
    regions = region_prompts(masks)
    with torch.no_grad():
        a = tiny_model(x, t, cap, options=ForwardOptions(features=(regions,)))
        b = tiny_model(x, t, cap, options=ForwardOptions(features=(with_new_caption(regions, 1),)))
        only_first = tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(masks[:1]),)))
    torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, only_first, atol=1e-6, rtol=0)


def test_padded_region_caption_tokens_are_ignored(tiny_model):
    x, t, cap = model_inputs()
    regions = region_prompts(grid_masks(1, 2, 8, 8))
    mask = regions.cap_mask.clone()
    mask[1, 2:] = False
    feats = regions.cap_feats.clone()
    padded = RegionalPrompts(feats, mask, regions.masks)
    feats = feats.clone()
    feats[1, 2:] = 100.0
    with torch.no_grad():
        a = tiny_model(x, t, cap, options=ForwardOptions(features=(padded,)))
        b = tiny_model(x, t, cap, options=ForwardOptions(features=(RegionalPrompts(feats, mask, regions.masks),)))
        full = tiny_model(x, t, cap, options=ForwardOptions(features=(regions,)))
    torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    assert (a - full).abs().max() > 1e-4


# -- batches, rows and CFG --------------------------------------------------------------------

@pytest.mark.parametrize("rows", [(0,), (1,)])
def test_regions_apply_only_to_the_rows_given(tiny_model, rows):
    x, t, cap = model_inputs(batch=2)
    masks = grid_masks(1, 2, 8, 8)
    with torch.no_grad():
        plain = tiny_model(x, t, cap)
        some = tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(masks, rows=rows),)))
        every = tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(masks),)))
    for row in range(2):
        if row in rows:
            assert (some[row] - plain[row]).abs().max() > 1e-4
            torch.testing.assert_close(some[row], every[row], atol=1e-6, rtol=0)
        else:
            torch.testing.assert_close(some[row], plain[row], atol=1e-6, rtol=0)
    assert all((every[row] - plain[row]).abs().max() > 1e-4 for row in range(2))


def test_regions_on_a_row_match_that_row_alone(tiny_model):
    """Row 1 of a batch-2 forward with regions on row 1 equals a batch-1 forward of it with regions."""
    x, t, cap = model_inputs(batch=2)
    masks = grid_masks(2, 2, 8, 8)
    with torch.no_grad():
        batch = tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(masks, rows=(1,)),)))
        alone = tiny_model(x[1:], t[1:], cap[1:], options=ForwardOptions(features=(region_prompts(masks),)))
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)


def test_same_size_list_input_with_regions_matches_a_batch(tiny_model):
    x, t, cap = model_inputs(batch=2)
    options = ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8)),))
    with torch.no_grad():
        batch = tiny_model(x, t, cap, options=options)
        items = tiny_model(list(x), t, cap, options=options)
    torch.testing.assert_close(torch.stack(items), batch, atol=1e-6, rtol=0)


def test_regions_go_to_the_conditional_rows_of_a_cfg_batch(tiny_model, attention_recorder):
    """A model batch described as [conditional items; unconditional items] (what lumina.sample and
    the ComfyUI bridge pass) gets the regions on its conditional rows only, whichever half comes first."""
    x, t, cap = model_inputs(batch=4)
    regions = region_prompts(grid_masks(1, 2, 8, 8))
    for halves, expected in [((True, False), [0, 1]), ((False, True), [2, 3]), ((True, True), [0, 1, 2, 3])]:
        options = ForwardOptions(features=(regions,), rows=batch_rows(2, halves))
        _, calls = attention_recorder.run(x, t, cap, options=options)
        assert calls[0].regional.rows.tolist() == expected
    explicit = ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8), rows=(1,)),), rows=batch_rows(2, (True, False)))
    _, calls = attention_recorder.run(x, t, cap, options=explicit)
    assert calls[0].regional.rows.tolist() == [1]


def sample_calls(model, options, cfg, batch=2):
    """Run lumina.sample for 3 grid points → (result, [(model batch, options, output)] per model call)."""
    g = torch.Generator().manual_seed(5)
    cond = Conditioning(torch.randn(batch, 5, CAP_WIDTH, generator=g), torch.ones(batch, 5, dtype=torch.bool))
    uncond = Conditioning(torch.randn(1, 3, CAP_WIDTH, generator=g), torch.ones(1, 3, dtype=torch.bool))
    calls = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append((args[0].shape[0], args[4], out.clone())))
    try:
        result = lumina.sample(model, cond, uncond, (batch, 4, 8, 8), steps=3, cfg=cfg, options=options, seed=3)
    finally:
        handle.remove()
    return result, calls


def test_sample_with_cfg_applies_regions_to_conditional_rows_only(tiny_model):
    options = ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8)),))
    plain, plain_calls = sample_calls(tiny_model, None, cfg=4.0)
    regional, calls = sample_calls(tiny_model, options, cfg=4.0)
    assert [c[0] for c in calls] == [4, 4]
    assert all(c[1].rows.conditional_rows() == (0, 1) and c[1].features == options.features for c in calls)
    # the first call sees the same noise in both runs: only the conditional rows differ
    first, first_plain = calls[0][2], plain_calls[0][2]
    torch.testing.assert_close(first[2:], first_plain[2:], atol=1e-6, rtol=0)
    assert all((first[row] - first_plain[row]).abs().max() > 1e-4 for row in range(2))
    assert (regional - plain).abs().max() > 1e-4


def test_sample_without_guidance_applies_regions_to_every_row(tiny_model):
    options = ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8)),))
    plain, _ = sample_calls(tiny_model, None, cfg=1.0)
    regional, calls = sample_calls(tiny_model, options, cfg=1.0)
    assert [c[0] for c in calls] == [2, 2] and all(c[1].rows.conditional_rows() == (0, 1) for c in calls)
    assert all((regional[row] - plain[row]).abs().max() > 1e-4 for row in range(2))


# -- bad input ------------------------------------------------------------------------------

def test_region_caption_width_must_match_the_model(tiny_model):
    x, t, cap = model_inputs()
    regions = RegionalPrompts(torch.randn(2, 4, 8), torch.ones(2, 4), grid_masks(1, 2, 8, 8))
    with pytest.raises(LuminaInputError, match=r"regional caption width 8 does not match the model's 16"):
        tiny_model(x, t, cap, options=ForwardOptions(features=(regions,)))


def test_one_mask_per_region_caption():
    with pytest.raises(LuminaInputError, match=r"one \(h, w\) mask per region: 2 captions but masks of shape \(3, 8, 8\)"):
        RegionalPrompts(torch.randn(2, 4, CAP_WIDTH), torch.ones(2, 4), grid_masks(1, 3, 8, 8))
    with pytest.raises(LuminaInputError, match="one \\(h, w\\) mask per region"):
        RegionalPrompts(torch.randn(2, 4, CAP_WIDTH), torch.ones(2, 4), torch.ones(8, 8))


def test_region_caption_mask_must_match_its_features():
    with pytest.raises(LuminaInputError, match=r"cap_feats \(regions, tokens, width\) and cap_mask \(regions, tokens\)"):
        RegionalPrompts(torch.randn(2, 4, CAP_WIDTH), torch.ones(2, 5), grid_masks(1, 2, 8, 8))


@pytest.mark.parametrize("rows", [(2,), (0, 5), (-1,)])
def test_region_rows_must_be_in_the_batch(tiny_model, rows):
    x, t, cap = model_inputs(batch=2)
    with pytest.raises(LuminaInputError, match=r"regional rows .* are outside the batch of 2"):
        tiny_model(x, t, cap, options=ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8), rows=rows),)))


def test_regions_need_one_latent_size(tiny_model):
    g = torch.Generator().manual_seed(0)
    items = [torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 12, generator=g)]
    with pytest.raises(LuminaInputError, match="one latent size per batch, not a list"):
        tiny_model(items, torch.rand(2), torch.randn(2, 5, CAP_WIDTH), options=ForwardOptions(features=(region_prompts(grid_masks(1, 2, 8, 8)),)))


def test_region_caption_with_no_real_token_is_refused(tiny_model):
    x, t, cap = model_inputs()
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1] = False
    regions = RegionalPrompts(torch.randn(2, 4, CAP_WIDTH), mask, grid_masks(1, 2, 8, 8))
    with pytest.raises(LuminaInputError, match="mark no tokens"):
        tiny_model(x, t, cap, options=ForwardOptions(features=(regions,)))


def test_features_must_be_a_tuple_of_feature_objects():
    regions = region_prompts(grid_masks(1, 2, 8, 8))
    with pytest.raises(TypeError, match=r"features must be a tuple of lumina.features objects, e.g. features=\(regions,\)"):
        ForwardOptions(features=regions)
