"""Style-shared batches: targets attend also to a reference item's keys and values (appended at
new RoPE positions), the reference itself stays a solo run, and the sampler maps items onto
the CFG batch.

Every model test runs on both families (`tiny_model`). The shared attention call is captured
by spying on the `attend` calls of lumina.features.style_shared (its hook's only attention call).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import lumina
from lumina import ForwardOptions, LuminaInputError
from lumina.conditioning import Conditioning
from lumina.features.compositional import RegionalPrompts, grid_masks
from lumina.features.style_shared import SharedAttention
from lumina.features import style_shared
from lumina.model.hooks import batch_rows
from lumina.model.rope import RopeScaling, apply_rope, rope_angles, rope_table

CAP_WIDTH = 16


# -- helpers ------------------------------------------------------------------------------

def model_inputs(batch: int = 3, h: int = 8, w: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, t, cap_feats) with a different latent, time and caption per item."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, h, w, generator=g), 0.1 + 0.8 * torch.rand(batch, generator=g), torch.randn(batch, 5, CAP_WIDTH, generator=g)


def forward(model, x, t, cap, shared: SharedAttention | None = None, regions: RegionalPrompts | None = None, **options) -> torch.Tensor:
    features = tuple(f for f in (regions, shared) if f is not None)
    with torch.no_grad():
        return model(x, t, cap, options=ForwardOptions(features=features, **options))


def solo_runs(model, x, t, cap, **options) -> torch.Tensor:
    """Each item run alone, stacked."""
    return torch.cat([forward(model, x[i : i + 1], t[i : i + 1], cap[i : i + 1], **options) for i in range(x.shape[0])])


def appended_rotations(model: lumina.LuminaDiT, h: int, w: int, scaling: RopeScaling | None = None) -> torch.Tensor:
    """(1, L, head_dim/2) RoPE expected for the appended reference tokens, from positions derived
    here: Flag-DiT continues the 1-D sequence (L … 2L−1, its [nextline] slots included),
    Next-DiT shifts the rows below the image ((row + R, col))."""
    c, p = model.config, model.config.patch_size
    rows, cols = h // p, w // p
    if model.family == "flag_dit":
        length = rows * (cols + 1)
        positions = torch.arange(length, 2 * length, dtype=torch.float32)[:, None]
    else:
        r, cc = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        positions = torch.stack([r.flatten() + rows, cc.flatten()], dim=-1).float()
    angles = rope_angles(positions, c.head_dim, c.rope_theta, scaling or RopeScaling(), interpolate_positions=model.family == "flag_dit")
    return rope_table(angles)[None]


@pytest.fixture
def shared_calls(monkeypatch):
    """Every `attend` call made by the style-shared hook: q, k, v, key_mask, scale."""
    calls = []
    real_attend = style_shared.attend

    def spy(q, k, v, **kwargs):
        calls.append(SimpleNamespace(q=q, k=k, v=v, key_mask=kwargs.get("key_mask"), scale=kwargs.get("scale")))
        return real_attend(q, k, v, **kwargs)

    monkeypatch.setattr(style_shared, "attend", spy)
    return calls


# -- the reference and items that do not share ------------------------------------------------

@pytest.mark.parametrize("proportional", [False, True], ids=["plain_scale", "proportional"])
@pytest.mark.parametrize("reference", [0, 1])
def test_reference_output_equals_its_solo_run(tiny_model, reference, proportional):
    x, t, cap = model_inputs()
    options = {"proportional_attention": proportional}
    out = forward(tiny_model, x, t, cap, SharedAttention(reference=reference), **options)
    solo = solo_runs(tiny_model, x, t, cap, **options)
    torch.testing.assert_close(out[reference], solo[reference], atol=1e-5, rtol=1e-5)
    for item in {0, 1, 2} - {reference}:
        assert (out[item] - solo[item]).abs().max() > 1e-3, f"item {item} did not attend to the reference"


@pytest.mark.parametrize("shared", [None, SharedAttention(items=(False, False, False)), SharedAttention(reference=2, items=(False, False, True))],
                         ids=["no_shared_attention", "items_all_false", "only_the_reference"])
def test_sharing_off_equals_independent_runs(tiny_model, shared):
    x, t, cap = model_inputs()
    torch.testing.assert_close(forward(tiny_model, x, t, cap, shared), solo_runs(tiny_model, x, t, cap), atol=1e-5, rtol=1e-5)


def test_items_flags_pick_the_targets(tiny_model):
    x, t, cap = model_inputs()
    out = forward(tiny_model, x, t, cap, SharedAttention(reference=0, items=(True, False, True)))
    solo = solo_runs(tiny_model, x, t, cap)
    torch.testing.assert_close(out[:2], solo[:2], atol=1e-5, rtol=1e-5)
    assert (out[2] - solo[2]).abs().max() > 1e-3


def test_single_item_batch_is_unchanged(tiny_model):
    x, t, cap = model_inputs(batch=1)
    torch.testing.assert_close(forward(tiny_model, x, t, cap, SharedAttention()), forward(tiny_model, x, t, cap), atol=0, rtol=0)


def test_reference_stays_solo_with_regional_prompts(tiny_model):
    """Both features at once (the sampler node passes both): the reference equals a solo run of it
    with the same regions."""
    x, t, cap = model_inputs()
    g = torch.Generator().manual_seed(3)
    regions = RegionalPrompts(torch.randn(2, 4, CAP_WIDTH, generator=g), torch.ones(2, 4), grid_masks(1, 2, 8, 8))
    both = forward(tiny_model, x, t, cap, SharedAttention(reference=1), regions=regions)
    solo = forward(tiny_model, x[1:2], t[1:2], cap[1:2], regions=regions)
    torch.testing.assert_close(both[1:2], solo, atol=1e-5, rtol=1e-5)
    assert (both[0] - forward(tiny_model, x[:1], t[:1], cap[:1], regions=regions)[0]).abs().max() > 1e-3


# -- what the targets attend to ---------------------------------------------------------------

def test_targets_attend_to_own_keys_then_reference_keys_at_appended_positions(tiny_model, attention_recorder, shared_calls):
    """Each layer's shared call: the targets' own rotated q/k/v, then the reference's
    k_norm(wk(x_ref)) rotated at the appended positions and its v, with the plain scale and no bias."""
    x, t, cap = model_inputs()
    reference, targets = 1, [0, 2]
    _, calls = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(SharedAttention(reference=reference),)))
    assert len(shared_calls) == len(calls) == tiny_model.config.n_layers
    appended = appended_rotations(tiny_model, 8, 8)
    for layer, (call, seen) in enumerate(zip(calls, shared_calls)):
        attn, ctx = tiny_model.layers[layer].attention, call.ctx
        b, length, _ = call.x.shape
        with torch.no_grad():
            q = apply_rope(attn.q_norm(attn.wq(call.x)).view(b, length, attn.n_heads, attn.head_dim), ctx.rotations)
            k = attn.k_norm(attn.wk(call.x)).view(b, length, attn.n_kv_heads, attn.head_dim)
            v = attn.wv(call.x).view(b, length, attn.n_kv_heads, attn.head_dim)
        assert seen.k.shape == (2, 2 * length, attn.n_kv_heads, attn.head_dim)
        torch.testing.assert_close(seen.q, q[targets], atol=1e-6, rtol=0)
        torch.testing.assert_close(seen.k[:, :length], apply_rope(k, ctx.rotations)[targets], atol=1e-6, rtol=0)
        torch.testing.assert_close(seen.k[:, length:], apply_rope(k[[reference, reference]], appended), atol=1e-6, rtol=0)
        torch.testing.assert_close(seen.v, torch.cat([v[targets], v[[reference, reference]]], dim=1), atol=1e-6, rtol=0)
        assert seen.key_mask is None and seen.scale == ctx.self_scale


@pytest.mark.parametrize("scaling", [RopeScaling(), RopeScaling(linear=2.0, ntk=3.0)], ids=["no_scaling", "rope_scaling"])
@pytest.mark.parametrize("h,w", [(8, 8), (8, 12)])
def test_appended_positions_repeat_no_position_of_the_target(tiny_model, attention_recorder, h, w, scaling):
    x, t, cap = model_inputs(h=h, w=w)
    options = ForwardOptions(features=(SharedAttention(),), rope_linear=scaling.linear, rope_ntk=scaling.ntk)
    _, calls = attention_recorder.run(x, t, cap, options=options)
    ctx, shared = calls[0].ctx, calls[0].shared
    own, extra = ctx.rotations[0], shared.rotations[0]
    assert shared.rotations.shape == ctx.rotations.shape
    torch.testing.assert_close(shared.rotations, appended_rotations(tiny_model, h, w, scaling), atol=1e-6, rtol=0)
    distance = torch.cdist(torch.view_as_real(extra).flatten(1), torch.view_as_real(own).flatten(1))
    assert float(distance.min()) > 1e-3, "an appended reference token shares a RoPE position with a target token"
    assert shared.targets.tolist() == [1, 2] and shared.references.tolist() == [0, 0]


def test_reference_changes_a_target_but_another_target_does_not(tiny_model, attention_recorder):
    """Changing the reference's latent changes a target's layer-0 attention output (its own
    input is the same); changing another target changes nothing of it."""
    x, t, cap = model_inputs()
    options = ForwardOptions(features=(SharedAttention(reference=0),))
    out, base = attention_recorder.run(x, t, cap, options=options)
    new_ref, new_other = x.clone(), x.clone()
    new_ref[0] = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(7))
    new_other[2] = new_ref[0]
    _, ref_changed = attention_recorder.run(new_ref, t, cap, options=options)
    out_other, other_changed = attention_recorder.run(new_other, t, cap, options=options)

    torch.testing.assert_close(ref_changed[0].x[1], base[0].x[1], atol=0, rtol=0)
    assert (ref_changed[0].output[1] - base[0].output[1]).abs().max() > 1e-4
    for changed, unchanged in zip(other_changed, base):
        torch.testing.assert_close(changed.output[1], unchanged.output[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out_other[:2], out[:2], atol=1e-6, rtol=0)
    # without sharing the reference's latent does not reach the target at all
    _, plain = attention_recorder.run(x, t, cap)
    _, plain_ref_changed = attention_recorder.run(new_ref, t, cap)
    torch.testing.assert_close(plain_ref_changed[0].output[1], plain[0].output[1], atol=1e-6, rtol=0)


# -- strength and layer range -----------------------------------------------------------------

def test_strength_is_a_logit_bias_on_the_reference_keys(tiny_model, shared_calls):
    x, t, cap = model_inputs()
    forward(tiny_model, x, t, cap, SharedAttention(strength=2.0))
    length = shared_calls[0].q.shape[1]
    expected = torch.cat([torch.zeros(2, length), torch.full((2, length), float(torch.log(torch.tensor(2.0))))], dim=1)
    for seen in shared_calls:
        torch.testing.assert_close(seen.key_mask, expected)


def test_tiny_strength_approaches_solo_and_strength_one_does_not(tiny_model):
    x, t, cap = model_inputs()
    solo = solo_runs(tiny_model, x, t, cap)
    faint = forward(tiny_model, x, t, cap, SharedAttention(strength=1e-6))
    full = forward(tiny_model, x, t, cap, SharedAttention(strength=1.0))
    strong = forward(tiny_model, x, t, cap, SharedAttention(strength=5.0))
    for item in (1, 2):
        faint_gap, full_gap = (faint[item] - solo[item]).abs().max(), (full[item] - solo[item]).abs().max()
        assert faint_gap < 1e-4 and full_gap > 1e-3 and full_gap > 100 * faint_gap
        assert (strong[item] - full[item]).abs().max() > 1e-3


def test_layer_range_leaves_earlier_layers_plain(tiny_model, attention_recorder, shared_calls):
    x, t, cap = model_inputs()
    _, plain = attention_recorder.run(x, t, cap)
    _, late = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(SharedAttention(layers=(1, 2)),)))
    assert len(shared_calls) == 1
    torch.testing.assert_close(late[0].output, plain[0].output, atol=1e-6, rtol=0)
    torch.testing.assert_close(late[1].x, plain[1].x, atol=1e-6, rtol=0)
    torch.testing.assert_close(late[1].output[0], plain[1].output[0], atol=1e-6, rtol=0)
    assert all((late[1].output[i] - plain[1].output[i]).abs().max() > 1e-4 for i in (1, 2))

    shared_calls.clear()
    _, early = attention_recorder.run(x, t, cap, options=ForwardOptions(features=(SharedAttention(layers=(0, 1)),)))
    assert len(shared_calls) == 1
    assert all((early[0].output[i] - plain[0].output[i]).abs().max() > 1e-4 for i in (1, 2))


# -- pairs and the CFG batch -------------------------------------------------------------------

def test_pairs_join_items_with_the_reference_in_every_half():
    both = batch_rows(3, (True, False))
    assert SharedAttention().pairs(batch_rows(3)) == ((1, 0), (2, 0))
    assert SharedAttention(reference=1).pairs(both) == ((0, 1), (2, 1), (3, 4), (5, 4))
    assert SharedAttention(reference=0, items=(True, False, True)).pairs(both) == ((2, 0), (5, 3))
    assert SharedAttention(reference=2, items=(False, True, True)).pairs(both) == ((1, 2), (4, 5))
    assert SharedAttention(items=(False, False)).pairs(batch_rows(2, (True, False))) == ()
    # ComfyUI may put the unconditional half first: pairs stay within each half
    assert SharedAttention(reference=1).pairs(batch_rows(2, (False, True))) == ((0, 1), (2, 3))


@pytest.mark.parametrize("shared,match", [
    (lambda: SharedAttention(reference=3), r"reference item 3 is outside the batch of 3"),
    (lambda: SharedAttention(reference=-1), r"reference item -1 must be ≥ 0"),
    (lambda: SharedAttention(items=(True, True)), r"items has 2 flags for a batch of 3"),
    (lambda: SharedAttention(strength=0.0), r"strength=0.0 must be positive"),
    (lambda: SharedAttention(strength=-1.0), r"strength=-1.0 must be positive"),
    (lambda: SharedAttention(strength=float("nan")), r"strength=nan must be positive"),
    (lambda: SharedAttention(layers=(3, 1)), r"layers \(3, 1\) must be \(start, stop\)"),
])
def test_bad_settings_are_refused(shared, match):
    with pytest.raises(LuminaInputError, match=match):
        shared().pairs(batch_rows(3, (True, False)))


def test_model_checks_the_reference_against_its_batch(tiny_model):
    x, t, cap = model_inputs()
    with pytest.raises(LuminaInputError, match=r"reference item 5 is outside the batch of 3"):
        forward(tiny_model, x, t, cap, SharedAttention(reference=5))


def test_shared_attention_needs_one_latent_size(tiny_model):
    g = torch.Generator().manual_seed(0)
    items = [torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 12, generator=g)]
    with pytest.raises(LuminaInputError, match="one latent size per batch, not a list"):
        forward(tiny_model, items, torch.rand(2), torch.randn(2, 5, CAP_WIDTH), SharedAttention())


@pytest.mark.parametrize("reference", [0, 1])
def test_sample_with_cfg_keeps_the_reference_a_solo_sample(tiny_model, reference):
    """Through lumina.sample with CFG the reference's conditional and unconditional rows both
    stay solo, so its sample equals sampling it alone; the other items change."""
    g = torch.Generator().manual_seed(5)
    cond = Conditioning(torch.randn(3, 5, CAP_WIDTH, generator=g), torch.ones(3, 5, dtype=torch.bool))
    uncond = Conditioning(torch.randn(1, 3, CAP_WIDTH, generator=g), torch.ones(1, 3, dtype=torch.bool))
    noise = torch.randn(3, 4, 8, 8, generator=g)
    seen = []
    handle = tiny_model.register_forward_pre_hook(lambda m, args: seen.append(args[4]))
    try:
        shared = lumina.sample(tiny_model, cond, uncond, noise.shape, noise=noise, steps=4, cfg=4.0,
                               options=ForwardOptions(features=(SharedAttention(reference=reference),)))
    finally:
        handle.remove()
    others = [i for i in range(3) if i != reference]
    assert all(o.features[0].pairs(o.rows) == tuple((g * 3 + i, g * 3 + reference) for g in range(2) for i in others) for o in seen)
    plain = lumina.sample(tiny_model, cond, uncond, noise.shape, noise=noise, steps=4, cfg=4.0)
    alone = lumina.sample(tiny_model, Conditioning(cond.cap_feats[reference : reference + 1], cond.cap_mask[reference : reference + 1]),
                          uncond, (1, 4, 8, 8), noise=noise[reference : reference + 1], steps=4, cfg=4.0)
    torch.testing.assert_close(shared[reference], plain[reference], atol=1e-6, rtol=0)
    # batch-of-3 vs batch-of-1 fp32 rounding, amplified by cfg 4 over 3 steps on values of ~10
    torch.testing.assert_close(shared[reference : reference + 1], alone, atol=1e-4, rtol=1e-5)
    assert all((shared[i] - plain[i]).abs().max() > 1e-3 for i in others)
