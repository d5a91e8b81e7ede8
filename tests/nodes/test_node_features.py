"""The training-free feature nodes (Style Shared Attention, Resolution Extrapolation,
Region-Adaptive Sampling) patch a clone and leave the input MODEL as it was; their effects on the
Flow Sampler and their bad-input errors."""

from __future__ import annotations

import pytest
import torch

from nodes_support import assert_untouched, defaults, empty_latent, encode, flow_sample, not_lumina_model, snapshot

SHAPES = "a red circle\na blue square\na green triangle"


def patch(comfyui, class_type: str, model, **inputs):
    return comfyui.run_node(class_type, model=model, **{**defaults(comfyui, class_type), **inputs})


def assert_clone(patched, model) -> None:
    assert patched is not model and patched.model is model.model  # a ModelPatcher clone: same weights, own options


@pytest.fixture(scope="module")
def batch_captions(comfyui, gemma):
    return comfyui.run_node("LuminaBatchTextEncode", text_encoder=gemma, prompts=SHAPES, negative_prompt="")


# -- Style Shared Attention -------------------------------------------------------------------------------

def test_style_shared_items_attend_to_the_reference_which_stays_its_solo_self(comfyui, next_dit, gemma, batch_captions):
    before = snapshot(next_dit)
    (shared_model,) = patch(comfyui, "LuminaStyleShared", next_dit)
    assert_clone(shared_model, next_dit)
    assert_untouched(next_dit, before)

    latent = empty_latent(comfyui, 64, 64, batch_size=3)
    shared = flow_sample(comfyui, shared_model, *batch_captions, latent, seed=1)
    plain = flow_sample(comfyui, next_dit, *batch_captions, latent, seed=1)
    solo = flow_sample(comfyui, next_dit, *encode(comfyui, gemma, "a red circle"), empty_latent(comfyui, 64, 64), seed=1)
    torch.testing.assert_close(shared[:1], solo, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain[:1], shared[:1], atol=1e-4, rtol=0)
    assert (plain[1:] - shared[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # the other items did look at the reference


def test_style_shared_items_switch_sharing_per_item(comfyui, next_dit, batch_captions):
    latent = empty_latent(comfyui, 64, 64, batch_size=3)
    (some,) = patch(comfyui, "LuminaStyleShared", next_dit, items="1, 0, 1")
    partly = flow_sample(comfyui, some, *batch_captions, latent, seed=1)
    plain = flow_sample(comfyui, next_dit, *batch_captions, latent, seed=1)
    torch.testing.assert_close(partly[1], plain[1], atol=1e-4, rtol=0)  # item 1 is off
    assert (partly[2] - plain[2]).abs().max() > 1e-3


def test_style_shared_bad_inputs(comfyui, next_dit, batch_captions):
    (far,) = patch(comfyui, "LuminaStyleShared", next_dit, reference_index=7)
    with pytest.raises(ValueError, match="reference item 7 is outside the batch of 3"):
        flow_sample(comfyui, far, *batch_captions, empty_latent(comfyui, 64, 64, batch_size=3))


# -- Resolution Extrapolation -----------------------------------------------------------------------------

def test_extrapolation_gives_the_resolution_shift_and_patches_a_clone(comfyui, next_dit):
    before = snapshot(next_dit)
    for side, shift in ((2048, 8.0), (128, 0.5)):
        patched, out_shift = patch(comfyui, "LuminaExtrapolation", next_dit, width=side, height=side, base_shift=4.0)
        assert out_shift == pytest.approx(shift)  # base shift × side / 1024 (the official resolution shift)
        assert_clone(patched, next_dit)
        assert "model_sampling" in patched.object_patches  # core samplers' schedule follows the new shift
    assert_untouched(next_dit, before)


def test_extrapolation_settings_win_over_the_samplers(comfyui, next_dit, gemma):
    captions = encode(comfyui, gemma, "a red circle")
    latent = empty_latent(comfyui, 128, 128)
    patched, shift = patch(comfyui, "LuminaExtrapolation", next_dit, width=128, height=128, mode="auto")
    auto = flow_sample(comfyui, next_dit, *captions, latent, shift=shift, extrapolation="auto")
    # at 128 px (below the 1024 px base) auto means proportional attention only: the node's settings are the sampler's
    torch.testing.assert_close(flow_sample(comfyui, patched, *captions, latent, shift=shift, extrapolation="off"), auto,
                               atol=1e-5, rtol=0)
    off, _ = patch(comfyui, "LuminaExtrapolation", next_dit, width=128, height=128, mode="off")
    plain_off = flow_sample(comfyui, next_dit, *captions, latent, shift=shift, extrapolation="off")
    torch.testing.assert_close(flow_sample(comfyui, off, *captions, latent, shift=shift, extrapolation="auto"), plain_off,
                               atol=1e-5, rtol=0)


def test_extrapolation_bad_mode(comfyui, next_dit):
    with pytest.raises(ValueError, match="unknown extrapolation mode 'sideways'"):
        patch(comfyui, "LuminaExtrapolation", next_dit, mode="sideways")


# -- Region-Adaptive Sampling -----------------------------------------------------------------------------

RAS_RUN = dict(steps=8, step_convention="model steps", solver="euler", seed=3)


def test_region_adaptive_reuses_patches_on_a_clone(comfyui, next_dit, gemma):
    captions = encode(comfyui, gemma, "a red circle at the top left")
    latent = empty_latent(comfyui, 64, 64)
    dense = flow_sample(comfyui, next_dit, *captions, latent, **RAS_RUN)
    before = snapshot(next_dit)
    (ras,) = patch(comfyui, "LuminaRegionAdaptive", next_dit, sample_ratio=0.5, start_step=2, reset_steps="5")
    assert_clone(ras, next_dit)
    assert_untouched(next_dit, before)
    sparse = flow_sample(comfyui, ras, *captions, latent, **RAS_RUN)
    assert sparse.shape == dense.shape and torch.isfinite(sparse).all()
    assert (sparse - dense).abs().max() > 1e-4  # patches were reused
    torch.testing.assert_close(flow_sample(comfyui, next_dit, *captions, latent, **RAS_RUN), dense, atol=0, rtol=0)

    (everything,) = patch(comfyui, "LuminaRegionAdaptive", next_dit, sample_ratio=1.0, start_step=2, reset_steps="")
    torch.testing.assert_close(flow_sample(comfyui, everything, *captions, latent, **RAS_RUN), dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("text", ["12;22", "a,b", "-1"])
def test_region_adaptive_bad_reset_steps(comfyui, next_dit, text):
    with pytest.raises(ValueError, match=f"reset_steps '{text}' must be comma-separated"):
        patch(comfyui, "LuminaRegionAdaptive", next_dit, reset_steps=text)


# -- Context Drop ------------------------------------------------------------------------------------------

def test_context_drop_equals_the_library_feature_on_a_clone(comfyui, next_dit, gemma, tiny):
    import lumina
    from lumina.features import ContextDrop
    from lumina.text_encoders import load_text_encoder

    captions = encode(comfyui, gemma, "a red circle at the top left", "blurry")
    latent = empty_latent(comfyui, 64, 64)
    dense = flow_sample(comfyui, next_dit, *captions, latent, seed=4)
    before = snapshot(next_dit)
    (dropped,) = patch(comfyui, "LuminaContextDrop", next_dit, ratio=2, end_time=0.8)
    assert_clone(dropped, next_dit)
    assert_untouched(next_dit, before)
    node = flow_sample(comfyui, dropped, *captions, latent, seed=4)
    assert (node - dense).abs().max() > 1e-4
    model = lumina.load_model(tiny.next_dit, dtype=torch.float32)
    both = load_text_encoder(tiny.gemma, dtype=torch.float32).encode(["a red circle at the top left", "blurry"])
    cond = lumina.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
    uncond = lumina.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    options = lumina.extrapolation_options(model.config, 64, 64, "auto")
    options = lumina.ForwardOptions(**{**options.__dict__, "features": (ContextDrop(ratio=2, end_time=0.8),)})
    settings = {k: v for k, v in defaults(comfyui, "LuminaFlowSampler").items() if k in ("solver", "shift", "cfg", "cfg_mode")}
    lib = lumina.sample(model, cond, uncond, (1, 4, 8, 8), steps=3, seed=4, options=options, **settings)
    torch.testing.assert_close(node, dropped.model.latent_format.process_out(lib), atol=1e-5, rtol=0)
    (auto,) = patch(comfyui, "LuminaContextDrop", next_dit, ratio=0)  # at the trained size auto is dense
    torch.testing.assert_close(flow_sample(comfyui, auto, *captions, latent, seed=4), dense, atol=0, rtol=0)


def test_gate_sparsity_node_patches_a_clone(comfyui, next_dit, gemma, capsys):
    captions = encode(comfyui, gemma, "a red circle at the top left", "blurry")
    latent = empty_latent(comfyui, 64, 64)
    dense = flow_sample(comfyui, next_dit, *captions, latent, seed=4)
    before = snapshot(next_dit)
    (none,) = patch(comfyui, "LuminaGateSparsity", next_dit, threshold=0.0)
    assert "0/8 heads" in capsys.readouterr().out
    torch.testing.assert_close(flow_sample(comfyui, none, *captions, latent, seed=4), dense, atol=0, rtol=0)
    (all_heads,) = patch(comfyui, "LuminaGateSparsity", next_dit, threshold=1.0)  # every gate: no text at all
    assert "8/8 heads, 2/2 whole layers" in capsys.readouterr().out
    assert_clone(all_heads, next_dit)
    assert_untouched(next_dit, before)
    assert (flow_sample(comfyui, all_heads, *captions, latent, seed=4) - dense).abs().max() > 1e-4


# -- every feature node ------------------------------------------------------------------------------------

@pytest.mark.parametrize("class_type", ["LuminaStyleShared", "LuminaExtrapolation", "LuminaRegionAdaptive", "LuminaContextDrop",
                                        "LuminaGateSparsity"])
def test_feature_nodes_refuse_other_models(comfyui, class_type):
    with pytest.raises(ValueError, match="needs a model from the Lumina Model Loader"):
        patch(comfyui, class_type, not_lumina_model())
