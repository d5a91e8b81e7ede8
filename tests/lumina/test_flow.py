"""lumina.flow: the time convention (t = 0 noise, t = 1 data), conversions, shifts and grids."""

from __future__ import annotations

import math

import pytest
import torch

from lumina import flow

SHIFTS = (0.5, 1.0, 3.0, 4.0, 6.0)


@pytest.fixture
def pair(gen):
    """(noise, data) in float64 so identities hold to rounding."""
    return torch.randn(3, 4, 6, 8, generator=gen, dtype=torch.float64), torch.randn(3, 4, 6, 8, generator=gen, dtype=torch.float64)


# --- interpolant and velocity ------------------------------------------------------------------------
def test_interpolate_endpoints(pair):
    noise, data = pair
    assert torch.equal(flow.interpolate(noise, data, 0.0), noise)
    assert torch.equal(flow.interpolate(noise, data, 1.0), data)
    t = torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64)  # per-sample times broadcast over the latent
    x = flow.interpolate(noise, data, t)
    assert torch.equal(x[0], noise[0]) and torch.equal(x[1], data[1])
    torch.testing.assert_close(x[2], 0.25 * data[2] + 0.75 * noise[2], rtol=0, atol=1e-15)


def test_velocity_target_is_dx_dt(pair):
    noise, data = pair
    v = flow.velocity_target(noise, data)
    torch.testing.assert_close(v, data - noise, rtol=0, atol=0)
    # the interpolant is a straight line travelled at velocity v: forward in t moves toward data
    a, b = 0.2, 0.7
    step = flow.interpolate(noise, data, b) - flow.interpolate(noise, data, a)
    torch.testing.assert_close(step, (b - a) * v, rtol=0, atol=1e-14)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9, 1.0])
def test_estimates_from_true_velocity(pair, t):
    noise, data = pair
    x_t = flow.interpolate(noise, data, t)
    v = flow.velocity_target(noise, data)
    torch.testing.assert_close(flow.denoised_from_velocity(x_t, v, t), data, rtol=0, atol=1e-14)
    torch.testing.assert_close(flow.noise_from_velocity(x_t, v, t), noise, rtol=0, atol=1e-14)


def test_estimates_with_per_sample_times(pair):
    noise, data = pair
    t = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    x_t = flow.interpolate(noise, data, t)
    v = flow.velocity_target(noise, data)
    torch.testing.assert_close(flow.denoised_from_velocity(x_t, v, t), data, rtol=0, atol=1e-14)
    torch.testing.assert_close(flow.noise_from_velocity(x_t, v, t), noise, rtol=0, atol=1e-14)


# --- other conventions -------------------------------------------------------------------------------
def test_sigma_round_trip():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(flow.t_from_sigma(flow.sigma_from_t(t)), t, rtol=0, atol=1e-15)
    assert flow.sigma_from_t(0.0) == 1.0 and flow.sigma_from_t(1.0) == 0.0  # sigma 1 = pure noise


def test_comfy_identity(pair):
    """ComfyUI: denoised = x − sigma·model_output must be the data for the true velocity."""
    noise, data = pair
    v = flow.velocity_target(noise, data)
    out = flow.comfy_output_from_velocity(v)
    torch.testing.assert_close(out, noise - data, rtol=0, atol=0)  # flow models predict noise − data
    assert torch.equal(flow.velocity_from_comfy_output(out), v)
    for t in (0.0, 0.35, 0.8):
        x_t = flow.interpolate(noise, data, t)
        sigma = flow.sigma_from_t(t)
        torch.testing.assert_close(x_t - sigma * out, data, rtol=0, atol=1e-14)
        torch.testing.assert_close(x_t - sigma * out, flow.denoised_from_velocity(x_t, v, t), rtol=0, atol=1e-14)


def test_diffusers_timestep_round_trip():
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    ts = flow.diffusers_timestep_from_t(t)
    torch.testing.assert_close(flow.t_from_diffusers_timestep(ts), t, rtol=0, atol=1e-14)
    assert flow.diffusers_timestep_from_t(0.0) == 1000  # diffusers starts at timestep 1000 = noise
    assert flow.diffusers_timestep_from_t(1.0) == 0
    assert flow.t_from_diffusers_timestep(250.0) == pytest.approx(0.75)
    assert flow.diffusers_timestep_from_t(0.5, num_train_timesteps=100) == pytest.approx(50)


# --- time shifts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("s", SHIFTS)
def test_time_shift_is_sigma_shift(s):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(flow.time_shift(t, s), 1 - flow.sigma_shift(1 - t, s), rtol=0, atol=1e-14)


@pytest.mark.parametrize("s", SHIFTS)
def test_time_shift_fixes_endpoints(s):
    ends = flow.time_shift(torch.tensor([0.0, 1.0], dtype=torch.float64), s)
    assert ends.tolist() == [0.0, 1.0]


def test_time_shift_direction():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    torch.testing.assert_close(flow.time_shift(t, 1.0), t, rtol=0, atol=1e-15)
    assert (flow.time_shift(t, 4.0) < t).all(), "s > 1 must keep t lower (more steps near noise)"
    assert (flow.time_shift(t, 0.5) > t).all()


def test_resolution_shift():
    assert flow.resolution_shift(1024, 1024) == 1.0
    assert flow.resolution_shift(1024, 1024, base_shift=3.0) == 3.0
    assert flow.resolution_shift(2048, 2048, base_shift=3.0) == pytest.approx(6.0)
    assert flow.resolution_shift(2048, 1024) == pytest.approx(math.sqrt(2))
    assert flow.resolution_shift(512, 512, base_size=512) == 1.0


# --- time grids --------------------------------------------------------------------------------------
def _check_grid(grid: torch.Tensor, points: int) -> None:
    assert grid.shape == (points,)
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0
    assert (grid[1:] > grid[:-1]).all(), f"grid not strictly increasing: {grid.tolist()}"


@pytest.mark.parametrize("schedule", flow.SCHEDULES)
@pytest.mark.parametrize("steps", [2, 5, 30])
def test_grid_conventions(schedule, steps):
    _check_grid(flow.time_grid(steps, schedule, 4.0), steps)  # default: grid_points, the official count
    _check_grid(flow.time_grid(steps, schedule, 4.0, convention="grid_points"), steps)
    _check_grid(flow.time_grid(steps, schedule, 4.0, convention="model_steps"), steps + 1)


def test_model_steps_one():
    assert flow.time_grid(1, "uniform", convention="model_steps").tolist() == [0.0, 1.0]


def test_shift_grid_formula():
    grid = flow.time_grid(7, "shift", 4.0)
    lin = torch.linspace(0, 1, 7)
    torch.testing.assert_close(grid, lin / (lin + 4.0 - 4.0 * lin), rtol=0, atol=1e-7)
    torch.testing.assert_close(flow.time_grid(7, "uniform", 4.0), lin, rtol=0, atol=0)  # shift ignored
    torch.testing.assert_close(flow.time_grid(7, "shift", 1.0), lin, rtol=0, atol=1e-7)


@pytest.mark.parametrize("scale", [1.0, 4.0, 8.0])
def test_sigmoid_grid(scale):
    grid = flow.sigmoid_time_grid(21, scale)
    _check_grid(grid, 21)
    gaps = grid.diff()
    # dense at both ends, sparse in the middle, symmetric about t = 0.5
    assert gaps[0] < gaps[10] and gaps[-1] < gaps[10]
    torch.testing.assert_close(grid + grid.flip(0), torch.ones(21), rtol=0, atol=1e-6)
    torch.testing.assert_close(flow.time_grid(21, "sigmoid", sigmoid_scale=scale), grid, rtol=0, atol=0)


def test_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine'.*shift.*uniform.*sigmoid"):
        flow.time_grid(10, "cosine")
    with pytest.raises(ValueError, match=r"unknown step convention 'steps'.*grid_points.*model_steps"):
        flow.time_grid(10, convention="steps")
    with pytest.raises(ValueError, match=r"steps=1 .*grid_points"):
        flow.time_grid(1)
    with pytest.raises(ValueError, match=r"steps=0 .*model_steps"):
        flow.time_grid(0, convention="model_steps")


# --- training-time samplers ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", flow.T_SAMPLERS)
def test_sample_t_range(kind, gen):
    t = flow.sample_t(kind, 4096, shift=3.0, generator=gen)
    assert t.shape == (4096,)
    assert (t >= 0).all() and (t <= 1).all()


def test_sample_t_is_seeded():
    a = flow.sample_t("lognorm", 16, generator=torch.Generator().manual_seed(7))
    b = flow.sample_t("lognorm", 16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_shift_sampler_moves_toward_data(gen):
    n = 20000
    u = flow.sample_t("uniform", n, generator=torch.Generator().manual_seed(0))
    s1 = flow.sample_t("shift", n, shift=1.0, generator=torch.Generator().manual_seed(0))
    s3 = flow.sample_t("shift", n, shift=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s1, u)  # shift 1 is uniform (same draws)
    assert s3.mean() > u.mean() + 0.1  # uniform ≈ 0.5; s = 3 gives ≈ 0.68
    assert (s3 >= u).all()  # s·u/(1 + (s − 1)·u) ≥ u on [0, 1] for s > 1
    ln = flow.sample_t("lognorm", n, generator=gen)
    assert abs(ln.mean().item() - 0.5) < 0.02  # logit-normal is symmetric about 1/2


def test_sample_t_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"unknown timestep sampler 'beta'.*uniform.*lognorm.*shift"):
        flow.sample_t("beta", 4)
