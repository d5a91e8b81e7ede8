"""Nothing wrong reported as success: non-finite inputs, options and results fail loudly, naming
what was wrong; a forward can be stopped between transformer blocks."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina import ForwardOptions, LuminaInputError, LuminaNumericError
from lumina.features.interrupt import InterruptCheck

from lumina_support import profiled_peak, tiny_random_model

CAP_WIDTH = 16


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 4, 8, 8, generator=g), torch.rand(batch, generator=g), torch.randn(batch, 5, CAP_WIDTH, generator=g)


@pytest.mark.parametrize("name", ["x", "t", "cap_feats"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_model_inputs_are_named(name, bad):
    model = tiny_random_model("next_dit")
    x, t, cap = _inputs()
    {"x": x, "t": t, "cap_feats": cap}[name].view(-1)[1] = bad
    with pytest.raises(LuminaInputError, match=rf"^{name} contains NaN or infinite values"):
        model(x, t, cap)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_sees_every_nan_and_inf_and_no_false_alarm(dtype):
    from lumina.finite import all_finite

    x = torch.randn(3, 50, dtype=dtype)
    assert all_finite(x) and all_finite(torch.empty(0, dtype=dtype)) and all_finite(torch.arange(4))
    for bad in (float("nan"), float("inf"), float("-inf")):
        y = x.clone()
        y[2, 7] = bad
        assert not all_finite(y), bad
    both = x.clone()
    both[0, 0], both[1, 1] = float("inf"), float("-inf")  # their sum is NaN: still caught
    assert not all_finite(both)
    big = torch.full((4,), torch.finfo(dtype).max, dtype=dtype)  # the sum overflows, every value is finite
    assert all_finite(big)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_all_finite_of_fp8_agrees_with_a_float_copy_on_every_bit_pattern(dtype):
    from lumina.finite import all_finite

    patterns = torch.arange(256, dtype=torch.uint8).view(dtype)
    finite = torch.isfinite(patterns.float())
    assert 0 < int(finite.sum()) < 256  # both formats have non-finite patterns, on both signs
    for code in range(256):  # each pattern alone, then among finite neighbours (a weight's shape)
        assert all_finite(patterns[code:code + 1]) == bool(finite[code]), code
        weight = torch.zeros(3, 40, dtype=torch.uint8)
        weight[1, 17] = code
        assert all_finite(weight.view(dtype)) == bool(finite[code]), code


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_all_finite_of_fp8_makes_no_copy(dtype):
    """It reads the bytes in place: a float copy of every weight of an fp8 load (4 bytes per
    element) once left glibc holding ~0.3 GiB beside the 2B model's 1.5 GiB of weights."""
    from lumina.finite import all_finite

    weight = torch.randn(512, 512).to(dtype)
    assert profiled_peak(lambda: all_finite(weight)) < weight.numel() // 16


def test_non_finite_item_of_a_list_is_named():
    model = tiny_random_model("next_dit")
    x, t, cap = _inputs()
    items = [x[0], x[1, :, :4].clone()]
    items[1][0, 0, 0] = float("nan")
    with pytest.raises(LuminaInputError, match=r"x\[1\] contains NaN"):
        model(items, t, cap)


@pytest.mark.parametrize(("changes", "match"), [
    (dict(rope_linear=float("nan")), r"rope_linear=nan must be a positive number"),
    (dict(rope_ntk=0.0), r"rope_ntk=0.0 must be a positive number"),
    (dict(time_aware_scale=float("inf")), r"time_aware_scale=inf must be a positive number"),
    (dict(time_aware_watershed=float("nan")), r"time_aware_watershed=nan must be a time in \[0, 1\]"),
    (dict(base_seqlen=1), r"base_seqlen=1 must be ≥ 2"),
])
def test_bad_forward_options_are_refused(changes, match):
    with pytest.raises(LuminaInputError, match=match):
        ForwardOptions(**changes)


def _captions():
    g = torch.Generator().manual_seed(1)
    return lumina.Conditioning(torch.randn(1, 5, CAP_WIDTH, generator=g), torch.ones(1, 5, dtype=torch.bool))


def test_non_finite_noise_and_start_latent_are_named():
    model, cond = tiny_random_model("next_dit"), _captions()
    noise = torch.zeros(1, 4, 8, 8)
    noise[0, 0, 0, 0] = float("nan")
    with pytest.raises(LuminaInputError, match="^noise contains NaN"):
        lumina.sample(model, cond, cond, (1, 4, 8, 8), noise=noise, steps=3)
    with pytest.raises(LuminaInputError, match="start latent contains NaN"):
        lumina.sample(model, cond, cond, start=lumina.ImageStart(noise, start_time=0.5), steps=3)


def test_a_non_finite_result_is_an_error_not_a_black_image():
    """Weights that overflow (here: a final layer scaled to inf) give finite inputs a NaN result."""
    model, cond = tiny_random_model("next_dit"), _captions()
    with torch.no_grad():
        model.final_layer.linear.weight.fill_(float("inf"))
    with pytest.raises(LuminaNumericError, match=r"sampling reached NaN or infinite values before t=0.\d+: the model produced them from finite inputs"):
        lumina.sample(model, cond, cond, (1, 4, 8, 8), steps=3)


def test_interrupt_check_stops_a_forward_between_blocks():
    model = tiny_random_model("next_dit", n_layers=4)
    x, t, cap = _inputs()
    ran: list[int] = []
    handles = [block.register_forward_pre_hook(lambda m, a, i=i: ran.append(i)) for i, block in enumerate(model.layers)]

    class Stop(Exception):
        pass

    checks = []

    def check() -> None:
        checks.append(1)
        if len(checks) == 3:
            raise Stop("cancelled")

    try:
        with pytest.raises(Stop):
            model(x, t, cap, options=ForwardOptions(features=(InterruptCheck(check),)))
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1], "the third check came before block 2 ran"
    plain = model(x, t, cap)
    with torch.no_grad():
        unchecked = model(x, t, cap, options=ForwardOptions(features=(InterruptCheck(lambda: None),)))
    assert torch.equal(plain.detach(), unchecked)
