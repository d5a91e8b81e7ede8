"""Regional prompts: the Lumina Regional Prompts node's lines → grid entries, and core
ConditioningSetArea / ConditioningSetMask entries as the Flow Sampler reads them."""

from __future__ import annotations

import pytest
import torch

from nodes_support import empty_latent, encode, flow_sample

LINES = ["a red circle", "a blue square", "a green triangle", "a black star"]


def regional(comfyui, encoder, prompts: str, rows: int, cols: int, global_prompt: str = "", negative: str = ""):
    return comfyui.run_node("LuminaRegionalPrompts", text_encoder=encoder, region_prompts=prompts, rows=rows, cols=cols,
                            global_prompt=global_prompt, negative_prompt=negative)


def assert_same_caption(entry: list, reference: list) -> None:
    """Same tokens and the same features on them (padding lengths may differ)."""
    mask, ref_mask = entry[1]["attention_mask"][0], reference[1]["attention_mask"][0]
    n = int(ref_mask.sum())
    assert int(mask.sum()) == n and mask[:n].all()
    torch.testing.assert_close(entry[0][0, :n], reference[0][0, :n], atol=1e-5, rtol=0)


def test_one_prompt_per_line_laid_out_row_by_row(comfyui, gemma):
    positive, negative = regional(comfyui, gemma, "a red circle\n\n  a blue square \na green triangle\na black star\n", 2, 2,
                                  negative="blurry")
    assert len(positive) == 5 and len(negative) == 1
    global_entry, regions = positive[0], positive[1:]
    assert not {"mask", "area"} & set(global_entry[1])
    for i, (entry, line) in enumerate(zip(regions, LINES)):
        row, col = divmod(i, 2)
        expected = torch.zeros(128, 128)
        expected[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64] = 1
        assert torch.equal(entry[1]["mask"], expected[None]) and entry[1]["mask_strength"] == 1.0
        assert_same_caption(entry, encode(comfyui, gemma, line)[0][0])  # the line, stripped
    assert_same_caption(global_entry, encode(comfyui, gemma, " ".join(LINES))[0][0])  # no global prompt: the lines joined
    assert_same_caption(negative[0], encode(comfyui, gemma, "blurry")[0][0])


def test_a_global_prompt_steers_the_whole_image(comfyui, gemma):
    positive, _ = regional(comfyui, gemma, "a red circle\na blue square", 1, 2, global_prompt="  two shapes  ")
    assert_same_caption(positive[0], encode(comfyui, gemma, "two shapes")[0][0])
    assert [entry[1]["mask"].shape for entry in positive[1:]] == [(1, 64, 128)] * 2


@pytest.mark.parametrize("prompts, rows, cols, needle", [
    ("\n \n", 2, 2, "0 regional prompt line(s) for a 2×2 grid"),
    ("a\nb\nc", 1, 2, "3 regional prompt line(s) for a 1×2 grid: write one prompt per line, 2 in all"),
])
def test_a_wrong_number_of_lines_is_a_clear_error(comfyui, gemma, prompts, rows, cols, needle):
    with pytest.raises(ValueError) as info:
        regional(comfyui, gemma, prompts, rows, cols)
    assert needle in str(info.value)


# -- core area and mask entries ---------------------------------------------------------------------------------

def core_regions(comfyui, encoder, global_prompt: str, areas: list[tuple[str, dict]]) -> tuple[list, list]:
    """Core ConditioningSetArea entries combined with ConditioningCombine after a global Lumina Text Encode."""
    nodes = comfyui.nodes
    positive, negative = encode(comfyui, encoder, global_prompt)
    for prompt, area in areas:
        (entry,) = nodes.ConditioningSetArea().append(encode(comfyui, encoder, prompt)[0], strength=1.0, **area)
        (positive,) = nodes.ConditioningCombine().combine(positive, entry)
    return positive, negative


def test_core_areas_equal_the_regional_prompts_node(comfyui, next_dit, gemma):
    """A 1×2 grid from our node and the same halves from core ConditioningSetArea + Combine."""
    latent = empty_latent(comfyui, 128, 64)
    ours = regional(comfyui, gemma, "a red circle\na blue square", 1, 2, global_prompt="a red circle and a blue square")
    core = core_regions(comfyui, gemma, "a red circle and a blue square", [
        ("a red circle", dict(width=64, height=64, x=0, y=0)), ("a blue square", dict(width=64, height=64, x=64, y=0))])
    a, b = flow_sample(comfyui, next_dit, *ours, latent, seed=1), flow_sample(comfyui, next_dit, *core, latent, seed=1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)

    plain = flow_sample(comfyui, next_dit, *encode(comfyui, gemma, "a red circle and a blue square"), latent, seed=1)
    assert (plain - a).abs().max() > 1e-3  # the regions do something


def test_core_mask_entries_work_like_areas(comfyui, next_dit, gemma):
    nodes = comfyui.nodes
    latent = empty_latent(comfyui, 128, 64)
    positive, negative = encode(comfyui, gemma, "a red circle and a blue square")
    areas = core_regions(comfyui, gemma, "a red circle and a blue square", [("a blue square", dict(width=64, height=64, x=64, y=0))])
    mask = torch.zeros(64, 128)
    mask[:, 64:] = 1
    (entry,) = nodes.ConditioningSetMask().append(encode(comfyui, gemma, "a blue square")[0], mask, "default", 1.0)
    (masked,) = nodes.ConditioningCombine().combine(positive, entry)
    torch.testing.assert_close(flow_sample(comfyui, next_dit, masked, negative, latent), flow_sample(comfyui, next_dit, *areas, latent),
                               atol=1e-4, rtol=0)


def test_regions_that_do_not_fit_the_image_are_clear_errors(comfyui, next_dit, gemma):
    nodes = comfyui.nodes
    latent = empty_latent(comfyui, 128, 128)
    outside = core_regions(comfyui, gemma, "two shapes", [("a red circle", dict(width=64, height=64, x=512, y=0))])
    with pytest.raises(ValueError, match="outside the 128×128 px image"):
        flow_sample(comfyui, next_dit, *outside, latent)

    positive, negative = encode(comfyui, gemma, "two shapes")
    (entry,) = nodes.ConditioningSetMask().append(encode(comfyui, gemma, "a red circle")[0], torch.ones(1, 32, 128), "default", 1.0)
    (wrong,) = nodes.ConditioningCombine().combine(positive, entry)
    with pytest.raises(ValueError, match="mask of 128×32 px does not fit the 128×128 px image"):
        flow_sample(comfyui, next_dit, wrong, negative, latent)

    grid, grid_negative = regional(comfyui, gemma, "a red circle\na blue square\na green triangle", 1, 3)
    assert torch.isfinite(flow_sample(comfyui, next_dit, grid, grid_negative, latent)).all()  # a grid stretches to any image
