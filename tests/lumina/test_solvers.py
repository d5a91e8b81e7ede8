"""lumina.solvers on analytic ODEs: convergence orders, exactness on straight flows, and
step-for-step agreement with torchdiffeq (which the official sampler calls)."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

from lumina import flow, solvers

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
F64 = torch.float64


# dx/dt = −x·cos t, x(t) = x(0)·exp(−sin t): depends on both x and t
def decay(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x * torch.cos(t)


def decay_solution(x0: torch.Tensor, t: float) -> torch.Tensor:
    return x0 * math.exp(-math.sin(t))


def nonlinear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A field nonlinear in x with explicit t dependence, to catch stage-time or stage-state mix-ups."""
    return torch.sin(3 * x) * (1 + t) - x**2 * torch.cos(5 * t) + t**2


def uniform_grid(steps: int) -> torch.Tensor:
    return torch.linspace(0, 1, steps + 1, dtype=F64)


@pytest.fixture
def x0() -> torch.Tensor:
    return torch.tensor([1.0, -0.5, 2.0, 0.25], dtype=F64)


# --- convergence ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", list(ORDERS))
def test_convergence_order(solver, x0):
    """Halving the step divides the global error by about 2^p."""
    exact = decay_solution(x0, 1.0)
    errors = []
    for steps in (8, 16, 32):
        x1 = solvers.solve(decay, x0, uniform_grid(steps), solver)
        errors.append((x1 - exact).abs().max().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    for p in orders:
        assert abs(p - ORDERS[solver]) < 0.25, f"{solver}: measured orders {orders}, errors {errors}"


@pytest.mark.parametrize("solver", list(ORDERS))
def test_linear_in_x_and_t(solver):
    """dx/dt = a·x + b·t, x(0) = x0: x(t) = (x0 + b/a²)·e^{at} − b·t/a − b/a²."""
    a, b, x0 = -1.5, 2.0, torch.tensor([0.7, -1.2], dtype=F64)
    exact = (x0 + b / a**2) * math.exp(a) - b / a - b / a**2
    x1 = solvers.solve(lambda x, t: a * x + b * t, x0, uniform_grid(64), solver)
    # global error ≈ C·h^p, h = 1/64; C is O(1) for this smooth problem
    assert (x1 - exact).abs().max().item() < 2.0 * (1 / 64) ** ORDERS[solver]


@pytest.mark.parametrize("solver", list(ORDERS))
@pytest.mark.parametrize("shift", [1.0, 4.0, 6.0])
def test_straight_flow_is_exact(solver, shift, gen):
    """A constant velocity data − noise carries noise to data exactly on any (shifted) grid."""
    noise, data = torch.randn(2, 4, 6, 6, generator=gen, dtype=F64)
    v = flow.velocity_target(noise, data)
    grid = flow.time_grid(7, "shift", shift).to(F64)
    traj = solvers.solve(lambda x, t: v, noise, grid, solver, trajectory=True)
    torch.testing.assert_close(traj[-1], data, rtol=0, atol=1e-13)
    for x, t in zip(traj, grid):  # and it passes through the interpolant at every grid time
        torch.testing.assert_close(x, flow.interpolate(noise, data, t.item()), rtol=0, atol=1e-13)


# --- agreement with torchdiffeq --------------------------------------------------------------------------
TORCHDIFFEQ_NAMES = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4", "heun": "heun2"}


@pytest.mark.parametrize("solver", list(ORDERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fixed_grid_matches_torchdiffeq(solver, dtype, x0):
    """Same grid, same stages: euler, midpoint and rk4 (torchdiffeq's rk4 is Kutta's 3/8 rule)
    agree bit for bit; heun (torchdiffeq heun2, different summation order) to rounding."""
    x0 = x0.to(dtype)
    grid = flow.time_grid(6, "shift", 3.0).to(dtype)
    ours = solvers.solve(nonlinear, x0, grid, solver, trajectory=True)
    ref = odeint(lambda t, x: nonlinear(x, t), x0, grid, method=TORCHDIFFEQ_NAMES[solver])
    if solver == "heun":
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-13 if dtype == F64 else 1e-5)
    else:
        assert torch.equal(ours, ref), f"max diff {(ours - ref).abs().max().item()}"


def test_rk4_is_the_three_eighths_rule(x0):
    """One step of the classical RK4 differs from ours (the 3/8 rule) on a nonlinear field."""
    t0, t1 = torch.tensor(0.1, dtype=F64), torch.tensor(0.6, dtype=F64)
    dt = t1 - t0
    k1 = nonlinear(x0, t0)
    k2 = nonlinear(x0 + dt * k1 / 2, t0 + dt / 2)
    k3 = nonlinear(x0 + dt * k2 / 2, t0 + dt / 2)
    k4 = nonlinear(x0 + dt * k3, t1)
    classical = x0 + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    ours, first = solvers.rk4_step(nonlinear, x0, t0, t1)
    assert torch.equal(first, k1)
    assert (ours - classical).abs().max() > 1e-6
    ref = odeint(lambda t, x: nonlinear(x, t), x0, torch.stack([t0, t1]), method="rk4")[-1]
    assert torch.equal(ours, ref)


@pytest.mark.parametrize(("atol", "rtol"), [(1e-6, 1e-3), (1e-9, 1e-7)])
def test_dopri5_matches_torchdiffeq(atol, rtol, x0):
    grid = flow.time_grid(5, "shift", 3.0).to(F64)
    ours = solvers.solve(nonlinear, x0, grid, "dopri5", atol=atol, rtol=rtol, trajectory=True)
    ref = odeint(lambda t, x: nonlinear(x, t), x0, grid, method="dopri5", atol=atol, rtol=rtol)
    assert torch.equal(ours, ref)
    final = solvers.solve(nonlinear, x0, grid, "dopri5", atol=atol, rtol=rtol)
    assert torch.equal(final, ref[-1])


def test_dopri5_accuracy_follows_tolerance(x0):
    exact = decay_solution(x0, 1.0)
    grid = uniform_grid(3)
    loose = solvers.solve(decay, x0, grid, "dopri5", atol=1e-4, rtol=1e-4)
    tight = solvers.solve(decay, x0, grid, "dopri5", atol=1e-10, rtol=1e-10)
    assert (tight - exact).abs().max() < 1e-8
    assert (tight - exact).abs().max() < (loose - exact).abs().max()


# --- bookkeeping ----------------------------------------------------------------------------------------
class Counting:
    def __init__(self, v):
        self.v, self.calls = v, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.v(x, t)


@pytest.mark.parametrize("solver", list(ORDERS))
def test_evaluations_per_step(solver, x0):
    v = Counting(nonlinear)
    solvers.solve(v, x0, uniform_grid(5), solver)
    assert v.calls == 5 * solvers.EVALS_PER_STEP[solver] == 5 * {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[solver]


@pytest.mark.parametrize("solver", list(ORDERS))
def test_trajectory_shape_and_ends(solver, x0):
    grid = uniform_grid(4)
    traj = solvers.solve(nonlinear, x0, grid, solver, trajectory=True)
    assert traj.shape == (5, *x0.shape)
    assert torch.equal(traj[0], x0)
    assert torch.equal(traj[-1], solvers.solve(nonlinear, x0, grid, solver))


@pytest.mark.parametrize("solver", list(ORDERS))
def test_fixed_step_callback_info(solver, x0):
    grid = flow.time_grid(6, "shift", 2.0).to(F64)
    seen = []
    traj = solvers.solve(nonlinear, x0, grid, solver, callback=seen.append, trajectory=True)
    assert [s.step for s in seen] == [1, 2, 3, 4, 5]
    assert {s.total for s in seen} == {5}
    assert [s.t for s in seen] == grid[1:].tolist()
    for i, s in enumerate(seen):
        assert torch.equal(s.x, traj[i + 1])
        t0 = grid[i]
        torch.testing.assert_close(s.denoised, traj[i] + (1 - t0) * nonlinear(traj[i], t0), rtol=0, atol=1e-14)


def test_unknown_solver():
    with pytest.raises(ValueError, match=r"unknown solver 'ddim'.*euler.*midpoint.*heun.*rk4.*dopri5"):
        solvers.solve(nonlinear, torch.zeros(2), uniform_grid(2), "ddim")
