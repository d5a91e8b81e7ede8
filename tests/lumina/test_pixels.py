"""lumina.pixels: the [-1, 1] pixel convention of pixel-space models, exactly as training writes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumina.pixels import from_uint8, from_unit, to_uint8, to_unit

ALL_UINT8 = torch.arange(256, dtype=torch.uint8)


def test_uint8_round_trip_is_exact_for_every_value():
    # the training cache stores pixel crops as uint8 and relies on getting the same floats back
    x = from_uint8(ALL_UINT8)
    assert x.dtype == torch.float32
    assert torch.equal(to_uint8(x), ALL_UINT8)


def test_from_uint8_exact_values_and_the_official_formula():
    x = from_uint8(ALL_UINT8)
    assert x[0].item() == -1.0 and x[255].item() == 1.0
    assert x[1].item() == np.float32(1 / 127.5 - 1)  # one float32 division, one subtraction
    reference = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    assert np.array_equal(x.numpy().view(np.int32), reference.view(np.int32))  # bit for bit


def test_to_uint8_exact_values_rounding_and_clamping():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 3.5, -1e-3, float("inf"), float("-inf")])
    assert to_uint8(x).tolist() == [0, 255, 128, 0, 255, 127, 255, 0]  # 0 → 127.5 → 128 (half to even)
    # rounding, not truncation (ComfyUI's SaveImage truncates; training rounds); 0.0 is the one
    # exact tie in [-1, 1] (127.5), and goes to the even neighbour 128
    levels = torch.tensor([0.4, 0.6, 254.4, 254.6]) / 127.5 - 1
    assert to_uint8(levels).tolist() == [0, 1, 254, 255]


def test_to_uint8_keeps_layout_and_device_and_upcasts():
    x = torch.rand(2, 3, 5, 7) * 2 - 1
    out = to_uint8(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    # a low-precision sample is mapped in float32, not quantised in its own dtype first
    assert torch.equal(to_uint8(x.bfloat16()), to_uint8(x.bfloat16().float()))
    assert to_uint8(x.permute(0, 2, 3, 1)).shape == (2, 5, 7, 3)


def test_from_uint8_refuses_float_images():
    with pytest.raises(TypeError, match="from_unit"):
        from_uint8(torch.rand(3, 4, 4))


def test_unit_range_values_clamping_and_round_trip():
    x = torch.tensor([-1.0, 1.0, 0.0, -1.5, 2.0])
    assert to_unit(x).tolist() == [0.0, 1.0, 0.5, 0.0, 1.0]
    assert from_unit(torch.tensor([0.0, 1.0, 0.5])).tolist() == [-1.0, 1.0, 0.0]
    assert from_unit(torch.tensor([1.25])).item() == 1.5  # not clamped: the encoder sees what it is given
    y = from_uint8(ALL_UINT8)
    assert torch.equal(from_unit(to_unit(y)), y)  # halving and doubling are exact


def test_comfyui_images_from_uint8_land_on_the_training_values():
    # ComfyUI loads a PNG as u / 255 in float32; the pixel-space VAE's encode must give the very
    # floats training used for that PNG
    assert torch.equal(from_unit(ALL_UINT8.float() / 255.0), from_uint8(ALL_UINT8))
