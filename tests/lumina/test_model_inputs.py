"""Forward-call contract: input validation errors, list (mixed-size) inputs, return_sigma, cap_mask."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina import LuminaInputError

ATOL = 1e-5
C, CAP = 4, 48  # the golden models' latent channels and caption width


def inputs(gen: torch.Generator, b: int = 2, h: int = 8, w: int = 12, lc: int = 5):
    x = torch.randn(b, C, h, w, generator=gen)
    t = torch.rand(b, generator=gen)
    cap = torch.randn(b, lc, CAP, generator=gen)
    mask = torch.ones(b, lc, dtype=torch.long)
    mask[-1, lc // 2 :] = 0  # last caption padded
    return x, t, cap, mask


# --- validation ----------------------------------------------------------------------------
def test_latent_not_divisible_by_patch(model, gen):
    x, t, cap, mask = inputs(gen)
    for bad in (torch.randn(2, C, 7, 12), torch.randn(2, C, 8, 11)):
        with pytest.raises(LuminaInputError, match="patch size"):
            model(bad, t, cap, mask)
    with pytest.raises(LuminaInputError, match=r"x\[1\].*patch size"):
        model([x[0], torch.randn(C, 9, 12)], t, cap, mask)


def test_wrong_channel_count(model, gen):
    x, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match=r"3 channels.*4-channel"):
        model(torch.randn(2, 3, 8, 12), t, cap, mask)
    with pytest.raises(LuminaInputError, match=r"x\[0\] has 8 channels"):
        model([torch.randn(8, 8, 12), x[1]], t, cap, mask)


def test_caption_width_mismatch_names_both_widths(model, gen):
    x, t, _, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match=r"width 32\b.*caption width 48\b"):
        model(x, t, torch.randn(2, 5, 32), mask)


def test_caption_batch_mismatch(model, gen):
    x, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match="cap_feats"):
        model(x, t, cap[:1], mask[:1])


def test_cap_mask_all_zero_row(model, gen):
    x, t, cap, mask = inputs(gen)
    mask[1] = 0
    with pytest.raises(LuminaInputError, match=r"cap_mask rows \[1\] mark no tokens"):
        model(x, t, cap, mask)


def test_cap_mask_shape_mismatch(model, gen):
    x, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match="cap_mask shape"):
        model(x, t, cap, mask[:, :-1])


@pytest.mark.parametrize("t_shape", [(3,), (2, 1), (1,)])
def test_wrong_t_shape(model, gen, t_shape):
    x, _, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match=r"t must be a scalar or have shape \(2,\)"):
        model(x, torch.rand(t_shape), cap, mask)


def test_scalar_t_broadcasts(model, gen):
    x, _, cap, mask = inputs(gen)
    with torch.no_grad():
        a = model(x, 0.4, cap, mask)
        b = model(x, torch.full((2,), 0.4), cap, mask)
    assert torch.equal(a, b)


def test_3d_tensor_instead_of_4d(model, gen):
    x, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match=r"\(batch, 4, height, width\).*\(4, 8, 12\)"):
        model(x[0], t[:1], cap[:1], mask[:1])


def test_list_item_must_be_3d(model, gen):
    x, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match=r"x\[1\] must be a \(4, height, width\)"):
        model([x[0], x[1:]], t, cap, mask)


def test_empty_list(model, gen):
    _, t, cap, mask = inputs(gen)
    with pytest.raises(LuminaInputError, match="empty list"):
        model([], t, cap, mask)


def test_input_errors_are_value_errors():
    assert issubclass(LuminaInputError, ValueError)


# --- list inputs ---------------------------------------------------------------------------
def test_same_size_list_equals_batched_tensor(model, gen):
    x, t, cap, mask = inputs(gen)
    with torch.no_grad():
        batched = model(x, t, cap, mask)
        listed = model(list(x), t, cap, mask)
    assert len(listed) == 2
    for i in range(2):
        assert listed[i].shape == x[i].shape
        assert (listed[i] - batched[i]).abs().max() <= ATOL


def test_same_size_list_returns_list(model, gen):
    x, t, cap, mask = inputs(gen)
    with torch.no_grad():
        listed = model(list(x), t, cap, mask)
        single = model([x[0]], t[:1], cap[:1], mask[:1])
    assert isinstance(listed, list) and [o.shape for o in listed] == [x[0].shape, x[1].shape]
    assert isinstance(single, list) and single[0].shape == x[0].shape


def test_mixed_size_list_equals_items_alone(model, gen):
    """[PAD] tokens of the shorter items must not change any real token's output."""
    sizes = [(8, 12), (4, 6), (10, 4)]
    items = [torch.randn(C, h, w, generator=gen) for h, w in sizes]
    _, t, cap, mask = inputs(gen, b=3)
    mask[1, 1:] = 0
    with torch.no_grad():
        listed = model(items, t, cap, mask)
        alone = [model(items[i][None], t[i : i + 1], cap[i : i + 1], mask[i : i + 1])[0] for i in range(3)]
    assert [o.shape for o in listed] == [i.shape for i in items]
    for i in range(3):
        assert (listed[i] - alone[i]).abs().max() <= ATOL, f"item {i} {sizes[i]}"


def test_mixed_size_list_independent_of_pad_token(model, gen):
    items = [torch.randn(C, 8, 12, generator=gen), torch.randn(C, 4, 6, generator=gen)]
    _, t, cap, mask = inputs(gen)
    with torch.no_grad():
        before = model(items, t, cap, mask)
        model.pad_token.add_(10.0)
        after = model(items, t, cap, mask)
    for a, b in zip(before, after):
        assert (a - b).abs().max() <= ATOL


# --- outputs -------------------------------------------------------------------------------
def test_return_sigma(model, gen):
    x, t, cap, mask = inputs(gen)
    with torch.no_grad():
        v = model(x, t, cap, mask)
        full = model(x, t, cap, mask, return_sigma=True)
        full_list = model([x[0], x[1, :, :4, :6]], t, cap, mask, return_sigma=True)
    assert v.shape == x.shape
    assert full.shape == (2, 2 * C, 8, 12)
    assert torch.equal(full[:, :C], v)
    assert [o.shape[0] for o in full_list] == [2 * C, 2 * C]


def test_all_ones_cap_mask_equals_none(model, gen):
    x, t, cap, _ = inputs(gen)
    with torch.no_grad():
        masked = model(x, t, cap, torch.ones(2, cap.shape[1], dtype=torch.long))
        bool_masked = model(x, t, cap, torch.ones(2, cap.shape[1], dtype=torch.bool))
        unmasked = model(x, t, cap, None)
    assert (masked - unmasked).abs().max() <= ATOL
    assert torch.equal(masked, bool_masked)


def test_cap_mask_hides_padded_caption_tokens(model, gen):
    """Changing caption features under mask=0 changes nothing; under mask=1 it does."""
    x, t, cap, mask = inputs(gen)
    other = cap.clone()
    other[1, mask[1] == 0] += 5.0
    with torch.no_grad():
        a, b = model(x, t, cap, mask), model(x, t, other, mask)
        c = model(x, t, other, None)
    assert (a - b).abs().max() <= ATOL
    assert (a[1] - c[1]).abs().max() > 1e-3


def test_build_model_type(golden):
    m = lumina.build_model(lumina.infer_config(golden.state_dict))
    assert m.family == golden.family
    assert isinstance(m, {"next_dit": lumina.NextDiT, "flag_dit": lumina.FlagDiT}[golden.family])
