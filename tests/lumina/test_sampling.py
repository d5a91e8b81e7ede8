"""lumina.sample on the tiny golden models: step counting, callbacks and interruption, seeding."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import lumina
from lumina.flow import time_grid
from lumina.solvers import EVALS_PER_STEP

SHAPE = (1, 4, 8, 8)


def run(model, captions, **kwargs) -> torch.Tensor:
    cond, uncond = captions
    kwargs.setdefault("steps", 4)
    return lumina.sample(model, cond, uncond, kwargs.pop("shape", SHAPE), **kwargs)


# --- step counting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", list(EVALS_PER_STEP))
def test_model_calls_per_convention(model, captions, model_calls, solver):
    """grid_points N (official) → N − 1 steps; model_steps N (ComfyUI, diffusers) → N steps. With CFG
    each velocity is one batched forward over [cond; uncond]."""
    run(model, captions, steps=5, solver=solver)
    assert model_calls == [2] * (4 * EVALS_PER_STEP[solver])
    model_calls.clear()
    run(model, captions, steps=5, solver=solver, step_convention="model_steps")
    assert len(model_calls) == 5 * EVALS_PER_STEP[solver]


def test_single_model_step(model, captions, model_calls):
    out = run(model, captions, steps=1, step_convention="model_steps")
    assert out.shape == SHAPE and len(model_calls) == 1


def test_unguided_runs_one_row(model, captions, model_calls):
    """No uncond (or cfg = 1) skips the unconditional half; the two are the same computation."""
    cond, _ = captions
    a = lumina.sample(model, cond, None, SHAPE, steps=4)
    assert model_calls == [1, 1, 1]
    b = run(model, captions, cfg=1.0)
    assert model_calls == [1] * 6
    assert torch.equal(a, b)


def test_output_and_trajectory_shapes(model, captions):
    out = run(model, captions, shape=(2, 4, 6, 10), steps=5)
    assert out.shape == (2, 4, 6, 10) and out.dtype == torch.float32
    traj = run(model, captions, shape=(2, 4, 6, 10), steps=5, trajectory=True)
    assert traj.shape == (5, 2, 4, 6, 10)
    assert torch.equal(traj[0], lumina.seeded_noise((2, 4, 6, 10), 0))
    assert torch.equal(traj[-1], out)


def test_batch_rows_are_independent(model, captions):
    """One caption serves a batch; each row samples as it would alone from its own noise."""
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    batch = run(model, captions, shape=noise.shape, noise=noise)
    for i in range(3):
        alone = run(model, captions, shape=(1, 4, 8, 8), noise=noise[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("schedule", ["shift", "uniform", "sigmoid"])
@pytest.mark.parametrize("convention", ["grid_points", "model_steps"])
def test_solver_lands_on_the_time_grid(model, captions, schedule, convention):
    seen = []
    run(model, captions, steps=5, schedule=schedule, shift=3.0, step_convention=convention, callback=seen.append)
    assert [s.t for s in seen] == time_grid(5, schedule, 3.0, convention=convention)[1:].tolist()


def test_bf16_model_returns_fp32(golden, captions):
    model = golden.model(torch.bfloat16)
    out = run(model, captions)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = run(golden.model(), captions)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()  # bf16 rounding, not a different sample


def test_sampling_leaves_model_and_grad_mode_alone(golden, model, captions):
    run(model, captions, steps=3)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, golden.state_dict[k]), k


# --- callbacks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
def test_callback_sees_every_step(model, captions, solver):
    seen = []
    traj = run(model, captions, steps=6, solver=solver, shift=4.0, callback=seen.append, trajectory=True)
    grid = time_grid(6, "shift", 4.0)
    assert [s.step for s in seen] == [1, 2, 3, 4, 5]
    assert {s.total for s in seen} == {5}
    assert [s.t for s in seen] == grid[1:].tolist()
    for i, s in enumerate(seen):
        assert torch.equal(s.x, traj[i + 1])
        assert s.denoised is not None and s.denoised.shape == SHAPE


def test_callback_denoised_is_the_step_start_estimate(model, captions):
    """Euler: x1 = x0 + dt·v, so denoised = x0 + (1 − t0)·v = x0 + (1 − t0)/dt·(x1 − x0)."""
    seen = []
    traj = run(model, captions, steps=4, callback=seen.append, trajectory=True)
    grid = time_grid(4, "shift", 4.0)
    for i, s in enumerate(seen):
        t0, t1 = grid[i], grid[i + 1]
        expected = traj[i] + (1 - t0) / (t1 - t0) * (traj[i + 1] - traj[i])
        torch.testing.assert_close(s.denoised, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("k", [1, 3])
def test_returning_true_interrupts(model, captions, model_calls, solver, k):
    seen = []

    def stop_at_k(info):
        seen.append(info.step)
        return info.step == k

    with pytest.raises(lumina.SamplingInterrupted, match=rf"step {k}/5"):
        run(model, captions, steps=6, solver=solver, callback=stop_at_k)
    assert seen == list(range(1, k + 1))
    assert len(model_calls) == k * EVALS_PER_STEP[solver]


def test_callback_exception_propagates(model, captions, model_calls):
    class Cancelled(Exception):
        pass

    def cancel(info):
        if info.step == 2:
            raise Cancelled("user pressed stop")

    with pytest.raises(Cancelled, match="user pressed stop"):
        run(model, captions, steps=6, callback=cancel)
    assert len(model_calls) == 2


class Stop(Exception):
    pass


@pytest.mark.parametrize("how", ["return_true", "raise"])
def test_nothing_leaks_after_interrupt(golden, model, captions, how):
    """After a stopped run: no state tensor survives, grad mode is restored, the model is unchanged
    and the next sample equals one from a fresh model."""
    seen: list[weakref.ref] = []

    def stop(info):
        seen.append(weakref.ref(info.x))
        seen.append(weakref.ref(info.denoised))
        if info.step == 2:
            if how == "raise":
                raise Stop
            return True

    try:
        run(model, captions, steps=6, callback=stop)
    except (lumina.SamplingInterrupted, Stop):
        pass
    else:
        pytest.fail("the callback did not stop sampling")
    gc.collect()
    assert len(seen) == 4
    assert all(ref() is None for ref in seen), "a tensor from the interrupted run is still referenced"
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    for k, v in model.state_dict().items():
        assert torch.equal(v, golden.state_dict[k]), k

    assert torch.equal(run(model, captions, steps=6), run(golden.model(), captions, steps=6))
    # and the parameters are still ordinary (not inference) tensors that train
    x = torch.randn(SHAPE)
    model(x, torch.tensor([0.5]), captions[0].cap_feats, captions[0].cap_mask).square().mean().backward()
    assert model.x_embedder.weight.grad is not None


# --- dopri5 callbacks ------------------------------------------------------------------------------------
def test_dopri5_callback(model, captions, model_calls):
    """dopri5 reports every evaluation; with official CFG its state is the paired [x; x_u], but the
    callback sees only the user's rows."""
    seen = []
    out = run(model, captions, steps=4, solver="dopri5", shift=3.0, callback=seen.append)
    assert len(seen) == len(model_calls) > 3
    assert all(s.total == 3 and 0 <= s.step <= 3 and s.denoised is None for s in seen)
    assert all(s.x.shape == SHAPE for s in seen)
    # torchdiffeq's last adaptive step may overshoot t = 1 and interpolate back (the official sampler
    # evaluates the model there too), so t is only bounded below; step is clamped to total
    assert all(s.t >= 0.0 for s in seen)
    steps = [s.step for s in seen]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 3
    assert seen[0].t == 0.0
    assert torch.equal(seen[0].x, lumina.seeded_noise(SHAPE, 0))
    assert out.shape == SHAPE


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_dopri5_interrupt(model, captions, model_calls, cfg):
    k = 4

    def stop(info):
        return len(model_calls) == k

    with pytest.raises(lumina.SamplingInterrupted):
        run(model, captions, steps=4, solver="dopri5", cfg=cfg, callback=stop)
    assert len(model_calls) == k
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


# --- seeding -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 128, 128), (2, 4, 12, 20)])
def test_seeded_noise_is_the_official_draw(shape):
    with torch.random.fork_rng():
        torch.manual_seed(42)
        official = torch.randn(shape)
    assert torch.equal(lumina.seeded_noise(shape, 42), official)
    assert lumina.seeded_noise(shape, 42).dtype == torch.float32


def test_seeded_noise_leaves_global_rng_alone():
    state = torch.get_rng_state()
    lumina.seeded_noise((1, 4, 8, 8), 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_seeded_noise_first_item_is_the_single_draw():
    """A batch's item 0 is what the official [1, C, h, w] draw gives for that seed."""
    single = lumina.seeded_noise((1, 4, 64, 96), 11)
    assert torch.equal(lumina.seeded_noise((3, 4, 64, 96), 11)[:1], single)


def test_same_seed_same_sample(model, captions):
    a = run(model, captions, seed=17)
    b = run(model, captions, seed=17)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(model, captions, seed=18))
    assert torch.equal(a, run(model, captions, noise=lumina.seeded_noise(SHAPE, 17)))
