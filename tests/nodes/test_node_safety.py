"""Nothing wrong reported as success, and cancel that works inside a long model call: a NaN cfg
fails the prompt on both sampling paths, and ComfyUI's interrupt stops a forward between
transformer blocks (at 1024² on a CPU one model call takes minutes)."""

from __future__ import annotations

import pytest

from nodes_support import defaults, empty_latent, encode, flow_sample


@pytest.fixture(scope="module")
def captions(comfyui, gemma):
    return encode(comfyui, gemma, "a red circle", "")


def test_nan_cfg_fails_the_flow_sampler_naming_cfg(comfyui, next_dit, captions):
    with pytest.raises(ValueError, match=r"cfg=nan is not a finite number"):
        flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), cfg=float("nan"))


def test_nan_cfg_fails_core_ksampler_instead_of_a_black_image(comfyui, next_dit, captions):
    inputs = {**defaults(comfyui, "KSampler"), "seed": 1, "steps": 2, "cfg": float("nan")}
    with pytest.raises(ValueError, match=r"guided prediction at sigma .* contains NaN or infinite values; use a finite cfg"):
        comfyui.run_node("KSampler", model=next_dit, positive=captions[0], negative=captions[1],
                         latent_image=empty_latent(comfyui, 64, 64), **inputs)


@pytest.mark.parametrize("path", ["flow_sampler", "ksampler"])
def test_interrupt_stops_the_model_call_between_blocks(comfyui, next_dit, captions, path):
    import comfy.model_management as mm

    blocks = next_dit.model.diffusion_model.layers
    ran: list[int] = []

    def block_ran(index):
        def hook(module, args, output):
            ran.append(index)
            if index == 0:  # the user presses cancel while block 0 runs
                mm.interrupt_current_processing(True)
        return hook

    handles = [block.register_forward_hook(block_ran(i)) for i, block in enumerate(blocks)]
    try:
        with pytest.raises(mm.InterruptProcessingException):
            if path == "flow_sampler":
                flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64), steps=5)
            else:
                inputs = {**defaults(comfyui, "KSampler"), "seed": 1, "steps": 5}
                comfyui.run_node("KSampler", model=next_dit, positive=captions[0], negative=captions[1],
                                 latent_image=empty_latent(comfyui, 64, 64), **inputs)
    finally:
        for h in handles:
            h.remove()
        mm.interrupt_current_processing(False)
    assert len(blocks) >= 2 and ran == [0], f"blocks after the cancel still ran: {ran}"
    flow_sample(comfyui, next_dit, *captions, empty_latent(comfyui, 64, 64))  # the next prompt runs


def test_feature_nodes_refuse_nonsense_at_the_node(comfyui, next_dit):
    shared = defaults(comfyui, "LuminaStyleShared")
    with pytest.raises(ValueError, match=r"items 'yes,maybe': 'maybe' is not a flag"):
        comfyui.run_node("LuminaStyleShared", model=next_dit, **{**shared, "items": "yes,maybe"})
    with pytest.raises(ValueError, match=r"layers \(5, 2\) must be \(start, stop\)"):
        comfyui.run_node("LuminaStyleShared", model=next_dit, **{**shared, "start_layer": 5, "end_layer": 2})
    with pytest.raises(ValueError, match=r"reference_index 3 is outside the 2 items listed"):
        comfyui.run_node("LuminaStyleShared", model=next_dit, **{**shared, "reference_index": 3, "items": "1,0"})
    ras = defaults(comfyui, "LuminaRegionAdaptive")
    with pytest.raises(ValueError, match=r"end_step 3 is before start_step 4"):
        comfyui.run_node("LuminaRegionAdaptive", model=next_dit, **{**ras, "start_step": 4, "end_step": 3})


def test_comfy_batches_are_described_in_their_own_order(comfyui):
    """ComfyUI lists its chunks in `cond_or_uncond` (0 conditional, 1 unconditional); features see that order."""
    import sys

    bridge = sys.modules[f"{comfyui.pack.__name__}.nodes.bridge"]
    rows = bridge.comfy_batch_rows(4, [1, 0])
    assert rows.items == (0, 1, 0, 1) and rows.conditional == (False, False, True, True)
    assert bridge.comfy_batch_rows(3, None).conditional_rows() == (0, 1, 2)
