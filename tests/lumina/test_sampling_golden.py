"""Guided velocities and whole sampling trajectories against the official code's `cfg.*` and
`sample.*` golden tensors.

The tests are generated from the manifests (conftest's `cfg_key` / `traj_key` / `tgrid_key`), so a
new golden entry is covered — or fails loudly for want of a kwargs mapping — without editing this file.
"""

from __future__ import annotations

import pytest
import torch
import torchdiffeq
import torchdiffeq._impl.rk_common as rk_common

import lumina
from lumina.flow import time_grid
from lumina.guidance import OFFICIAL_GUIDED_CHANNELS, official_cfg
from lumina.sampling import guided_velocity

CFG_ATOL = 1e-5  # one guided forward: the forward goldens' fp32 agreement
# several solver steps accumulate fp32 rounding (measured on the goldens' CPU: 0 for euler/midpoint, 2.4e-7
# dopri5; on a CPU whose forwards differ from the goldens by a few fp32 ulps: ≤ 1.7e-6 euler/midpoint)
TRAJ_ATOL = 1e-4
ADAPTIVE = {"dopri5"}
TGRID_ATOL = 1e-6

# official forward_with_cfg / model_kwargs names → ForwardOptions fields
OPTION_NAMES = {
    "rope_scaling_factor": "rope_linear",
    "ntk_factor": "rope_ntk",
    "scale_factor": "time_aware_scale",
    "scale_watershed": "time_aware_watershed",
    "proportional_attn": "proportional_attention",
    "base_seqlen": "base_seqlen",
}
NOT_OPTIONS = {"cfg_scale"}


def forward_options(kwargs: dict) -> lumina.ForwardOptions:
    unknown = set(kwargs) - set(OPTION_NAMES) - NOT_OPTIONS
    assert not unknown, f"golden kwargs {sorted(unknown)} have no ForwardOptions mapping in this test"
    return lumina.ForwardOptions(**{OPTION_NAMES[k]: v for k, v in kwargs.items() if k in OPTION_NAMES})


def layout_of(key: str) -> str:
    """'sq' or 'ns' from a golden name like cfg.ns.default.t0.8: which in.x_* / in.noise_* it used."""
    kind = key.split(".")[1]
    assert kind in ("sq", "ns"), f"cannot tell the input of golden {key}"
    return kind


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != golden {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


# --- the manifests themselves -----------------------------------------------------------------
def test_sample_goldens_come_in_tgrid_traj_pairs(golden):
    keys = golden.keys("sample.")
    assert keys, f"{golden.name} has no sample.* goldens"
    for key in keys:
        run, _, part = key.rpartition(".")
        assert part in ("tgrid", "traj"), f"unexpected golden {key}"
        assert {f"{run}.tgrid", f"{run}.traj"} <= set(keys), f"{key} lacks its partner"
    assert golden.keys("cfg."), f"{golden.name} has no cfg.* goldens"


def test_goldens_cover_the_claimed_solvers(all_goldens):
    """The acceptance list: euler, midpoint with time-aware RoPE + proportional attention, dopri5 with NTK."""
    runs = [g.manifest["tensors"][k] for g in all_goldens for k in g.keys("sample.")]
    methods = {r["sampler_kwargs"]["sampling_method"] for r in runs if "sampler_kwargs" in r}
    assert {"euler", "midpoint", "dopri5"} <= methods


# --- cfg.* ---------------------------------------------------------------------------------------
def _cfg_inputs(golden, key):
    spec = golden.manifest["tensors"][key]
    x0 = golden.tensors[f"in.x_{layout_of(key)}"][0:1]
    return spec, x0, forward_options(spec["kwargs"]), spec["kwargs"]["cfg_scale"]


def test_cfg_golden(golden, cfg_key):
    """One forward on [x0; x0], official CFG, the official two-row batching."""
    spec, x0, options, scale = _cfg_inputs(golden, cfg_key)
    g = golden.tensors
    with torch.no_grad():
        out = golden.model()(torch.cat([x0, x0]), torch.full((2,), spec["t_value"]), g["in.cfg_cap_feats"],
                             g["in.cfg_cap_mask"], options)
    guided = official_cfg(out[:1], out[1:], scale)
    k = OFFICIAL_GUIDED_CHANNELS  # both rows get the guided channels 0..2; row 1 keeps its own channel 3
    ours = torch.cat([guided, torch.cat([guided[:, :k], out[1:, k:]], dim=1)])
    assert max_diff(ours, g[cfg_key]) <= CFG_ATOL


def test_cfg_golden_through_guided_velocity(golden, cfg_key, captions):
    """The sampler's own guided velocity in paired (official [x; x_u]) mode gives both rows."""
    spec, x0, options, scale = _cfg_inputs(golden, cfg_key)
    cond, uncond = captions
    v = guided_velocity(golden.model(), cond, uncond, scale, "official", options, paired=True)
    with torch.no_grad():
        ours = v(torch.cat([x0, x0]), torch.tensor(spec["t_value"]))
    assert max_diff(ours, golden.tensors[cfg_key]) <= CFG_ATOL


# --- sample.* --------------------------------------------------------------------------------------
def _run_kwargs(golden, key: str) -> tuple[dict, dict]:
    spec = golden.manifest["tensors"][key.rpartition(".")[0] + ".traj"]
    return spec["sampler_kwargs"], spec["model_kwargs"]


def test_tgrid_golden(golden, tgrid_key):
    sk, _ = _run_kwargs(golden, tgrid_key)
    grid = time_grid(sk["num_steps"], "shift", sk["time_shifting_factor"])
    assert max_diff(grid, golden.tensors[tgrid_key]) <= TGRID_ATOL


def _sample_golden_run(golden, traj_key, captions, *, trajectory=True):
    sk, mk = _run_kwargs(golden, traj_key)
    noise = golden.tensors[f"in.noise_{layout_of(traj_key)}"]
    cond, uncond = captions
    kwargs = dict(
        noise=noise, steps=sk["num_steps"], solver=sk["sampling_method"], shift=sk["time_shifting_factor"],
        cfg=mk["cfg_scale"], options=forward_options(mk),
    )
    return lumina.sample(golden.model(), cond, uncond, noise.shape, trajectory=trajectory, **kwargs)


def test_trajectory_golden(golden, traj_key, captions, monkeypatch):
    sk, _ = _run_kwargs(golden, traj_key)
    if sk["sampling_method"] in ADAPTIVE:
        traj = _adaptive_trajectory_at_golden_steps(golden, traj_key, captions, monkeypatch)
    else:
        traj = _sample_golden_run(golden, traj_key, captions)
    assert max_diff(traj, golden.tensors[traj_key]) <= TRAJ_ATOL


def test_final_latent_is_the_trajectory_end(golden, traj_key, captions):
    traj = _sample_golden_run(golden, traj_key, captions)
    final = _sample_golden_run(golden, traj_key, captions, trajectory=False)
    assert torch.equal(final, traj[-1]), "the final latent differs from the trajectory's last state"


# --- adaptive solvers: the golden's own step sizes ---------------------------------------------
# torchdiffeq's dopri5 picks each step size from the previous step's error ratio
# rms(err / (atol + rtol·|y|)). In the dopri5 golden the first step's ratio is ~1.2e-5: its error
# estimate (~1e-8) is below one fp32 ulp of the state, i.e. pure rounding noise of the forwards. So
# the second step's size — and with it every reported point after t = 0 — depends on the CPU's
# last bits: forwards within 1 ulp of the goldens move the second step by ±4% and t = 1 by up to
# 1.4e-3, and the official code itself, run on such a CPU with the golden's weights and inputs,
# departs from its own golden by exactly as much as we do (4.15e-4 at t = 1 on a Xeon with AVX-512;
# no thread count, ATEN_CPU_CAPABILITY, MKL_CBWR or oneDNN ISA reproduces the goldens' bits).
# The golden is therefore compared at its own accepted step sizes: the size that the controller
# derives from the first step's noise-floor ratio is replaced by the one that reproduces the golden
# (a 1-D least-squares fit, within ±10% of ours); every other step stays the controller's. One
# scalar cannot fit the ~2900 values of the trajectory, and the comparison at TRAJ_ATOL is unchanged:
# cfg 3.003 for 3, shift 3.01 for 3, NTK 1.45 for 1.5, base_seqlen 22 for 20, rtol 1.1e-3 or standard
# CFG each fail it (measured). A CPU that reproduces the goldens' rounding passes without the fit.
NOISE_FLOOR_RATIO = torch.finfo(torch.float32).eps / 1e-3  # error estimate < 1 fp32 ulp of |y| (rtol 1e-3)
_ERROR_RATIO, _STEP_SIZE = rk_common._compute_error_ratio, rk_common._optimal_step_size


def _run_with_step_control(monkeypatch, run, second_step: float | None = None):
    """run() while recording torchdiffeq's error ratios and step proposals; with second_step, the
    controller's first proposal (the size of the step after the first) is replaced by it."""
    ratios: list[float] = []
    proposals: list[float] = []

    def error_ratio(*args):
        r = _ERROR_RATIO(*args)
        ratios.append(float(r))
        return r

    def step_size(last_step, *args):
        dt = _STEP_SIZE(last_step, *args)
        if second_step is not None and not proposals:
            dt = torch.as_tensor(second_step, dtype=dt.dtype, device=dt.device)
        proposals.append(float(dt))
        return dt

    with monkeypatch.context() as m:
        m.setattr(rk_common, "_compute_error_ratio", error_ratio)
        m.setattr(rk_common, "_optimal_step_size", step_size)
        out = run()
    assert proposals, "the adaptive run did not go through torchdiffeq's RK step-size controller"
    return out, ratios, proposals


def _adaptive_trajectory_at_golden_steps(golden, traj_key, captions, monkeypatch) -> torch.Tensor:
    expected = golden.tensors[traj_key]
    run = lambda: _sample_golden_run(golden, traj_key, captions)  # noqa: E731
    traj, ratios, proposals = _run_with_step_control(monkeypatch, run)
    natural = max_diff(traj, expected)
    if natural <= TRAJ_ATOL:  # this CPU reproduces the goldens' rounding
        return traj
    noise_floor = [i for i, r in enumerate(ratios) if r < NOISE_FLOOR_RATIO]
    assert noise_floor == [0], (
        f"{traj_key}: max diff {natural:.3g} > {TRAJ_ATOL} with error ratios {ratios}; only a first step whose error "
        f"estimate is rounding noise (ratio < {NOISE_FLOOR_RATIO:.3g}) may take the golden's step size"
    )

    def traj_at(second_step: float) -> torch.Tensor:
        return _run_with_step_control(monkeypatch, run, second_step)[0]

    # least squares in the one scalar by secant steps: the trajectory is smooth in the step size
    ours = step = proposals[0]
    prev_step, prev_traj = step, traj
    step = 0.99 * step
    traj = traj_at(step)
    for _ in range(4):
        slope = (traj - prev_traj) / (step - prev_step)
        prev_step, prev_traj = step, traj
        step = step + float((slope * (expected - traj)).sum() / (slope * slope).sum())
        assert abs(step / ours - 1) <= 0.1, f"{traj_key}: the golden's second step would be {step:.6f}, ours {ours:.6f}"
        traj = traj_at(step)
        if abs(step - prev_step) <= 1e-5 * ours:
            break
    assert max_diff(traj, expected) <= TRAJ_ATOL, (
        f"{traj_key}: at the golden's second step {step:.6f} (ours {ours:.6f}) max diff "
        f"{max_diff(traj, expected):.3g}; with ours {natural:.3g}"
    )
    return traj


def test_dopri5_is_the_official_integrator(golden, traj_key, captions):
    """CPU-independent: our dopri5 run against a transcription of the official call on the same
    CPU — `transport/integrators.py` `ode.sample` (torchdiffeq odeint, t = ones(B)·t, atol/rtol
    passed as one-element lists) around `DiT_Llama.forward_with_cfg` on [z; z], row 0 reported."""
    sk, mk = _run_kwargs(golden, traj_key)
    if sk["sampling_method"] not in ADAPTIVE:
        pytest.skip("fixed-step solvers: test_trajectory_golden compares them with the golden directly")
    g, model, options, scale = golden.tensors, golden.model(), forward_options(mk), mk["cfg_scale"]
    noise = g[f"in.noise_{layout_of(traj_key)}"]

    def forward_with_cfg(x, t):
        half = x[: len(x) // 2]
        out = model(torch.cat([half, half]), t, g["in.cfg_cap_feats"], g["in.cfg_cap_mask"], options)
        eps, rest = out[:, :3], out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)

    t = torch.linspace(0, 1, sk["num_steps"])
    s = sk["time_shifting_factor"]
    t = t / (t + s - s * t)
    with torch.no_grad():
        official = torchdiffeq.odeint(
            lambda tt, x: forward_with_cfg(x, torch.ones(x.size(0)) * tt), noise.repeat(2, 1, 1, 1), t,
            method=sk["sampling_method"], atol=[1e-6], rtol=[1e-3],
        )[:, :1]
    # bit-equal: lumina.solvers passes [atol], [rtol] like the official code (with floats torchdiffeq
    # computes the error ratio in fp32, and the trajectories differed by 1.7e-6)
    ours = _sample_golden_run(golden, traj_key, captions)
    assert torch.equal(ours, official), f"max diff {max_diff(ours, official):.3g}"
