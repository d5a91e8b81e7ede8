"""Lumina Scheduler: SIGMAS of the official time grid for core SamplerCustom (sigma = 1 − t)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "nextdit_tiny"
GRID = "grid points (official)"


def sigmas(comfyui, steps, step_convention=GRID, schedule="shift", shift=4.0, denoise=1.0, **optional):
    (out,) = comfyui.run_node("LuminaScheduler", steps=steps, step_convention=step_convention, schedule=schedule,
                              shift=shift, denoise=denoise, **optional)
    return out


def golden_grids() -> list[tuple[str, int, float, torch.Tensor]]:
    """(name, grid points, shift, t grid) of the official code's recorded sampling runs."""
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    tensors = load_file(str(GOLDEN / "tensors.safetensors"))
    out = []
    for key in sorted(k for k in manifest["tensors"] if k.endswith(".tgrid")):
        settings = key.split(".")[2].split("_")  # e.g. sample.sq.euler_n7_shift4_cfg4.tgrid
        n = int(next(s for s in settings if s.startswith("n"))[1:])
        shift = float(next(s for s in settings if s.startswith("shift"))[5:])
        out.append((key, n, shift, tensors[key]))
    return out


@pytest.mark.parametrize("name, points, shift, t", golden_grids(), ids=lambda v: v if isinstance(v, str) else "")
def test_grid_points_are_the_official_time_grid_as_one_minus_t(comfyui, name, points, shift, t):
    out = sigmas(comfyui, points, shift=shift)
    assert out.dtype == torch.float32 and out.shape == (points,)
    torch.testing.assert_close(out, 1 - t.float(), atol=1e-6, rtol=0)


def test_sigmas_run_from_noise_to_data(comfyui):
    for convention in (GRID, "model steps"):
        for schedule in ("shift", "uniform", "sigmoid"):
            out = sigmas(comfyui, 8, convention, schedule)
            assert out[0] == 1.0 and out[-1] == 0.0 and (out[1:] < out[:-1]).all(), (convention, schedule)


def test_model_steps_are_one_grid_point_more(comfyui):
    torch.testing.assert_close(sigmas(comfyui, 6, "model steps"), sigmas(comfyui, 7, GRID))


def test_uniform_schedule_and_shift(comfyui):
    torch.testing.assert_close(sigmas(comfyui, 5, schedule="uniform"), torch.linspace(1, 0, 5))
    torch.testing.assert_close(sigmas(comfyui, 5, shift=1.0), torch.linspace(1, 0, 5))  # shift 1: no shift
    assert (sigmas(comfyui, 5, shift=6.0)[1:-1] > sigmas(comfyui, 5, shift=2.0)[1:-1]).all()  # more time near noise


@pytest.mark.parametrize("points, denoise", [(10, 0.6), (10, 0.25), (30, 0.5), (7, 0.99)])
def test_denoise_drops_the_first_grid_points_like_the_official_img2img(comfyui, points, denoise):
    """The official img2img strength: the first int(N·(1 − strength)) grid points are skipped."""
    full = sigmas(comfyui, points)
    part = sigmas(comfyui, points, denoise=denoise)
    torch.testing.assert_close(part, full[int(points * (1 - denoise)):])
    assert part[-1] == 0.0


def test_sigmoid_scale_reaches_the_sigmoid_schedule_only(comfyui):
    assert not torch.equal(sigmas(comfyui, 6, schedule="sigmoid", sigmoid_scale=6.0), sigmas(comfyui, 6, schedule="sigmoid"))
    torch.testing.assert_close(sigmas(comfyui, 6, sigmoid_scale=6.0), sigmas(comfyui, 6))
