"""Guided velocities and whole sampling trajectories against the official code's `cfg.*` and
`sample.*` golden tensors.

The tests are generated from the manifests (conftest's `cfg_key` / `traj_key` / `tgrid_key`), so a
new golden entry is covered — or fails loudly for want of a kwargs mapping — without editing this file.
"""

from __future__ import annotations

import torch

import lumina
from lumina.flow import time_grid
from lumina.guidance import OFFICIAL_GUIDED_CHANNELS, official_cfg
from lumina.sampling import guided_velocity

CFG_ATOL = 1e-5  # one guided forward: the forward goldens' fp32 agreement
TRAJ_ATOL = 1e-4  # several solver steps accumulate fp32 rounding (measured: 0 for euler/midpoint, 2.4e-7 dopri5)
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


def test_trajectory_golden(golden, traj_key, captions):
    sk, mk = _run_kwargs(golden, traj_key)
    noise = golden.tensors[f"in.noise_{layout_of(traj_key)}"]
    cond, uncond = captions
    kwargs = dict(
        noise=noise, steps=sk["num_steps"], solver=sk["sampling_method"], shift=sk["time_shifting_factor"],
        cfg=mk["cfg_scale"], options=forward_options(mk),
    )
    model = golden.model()
    traj = lumina.sample(model, cond, uncond, noise.shape, trajectory=True, **kwargs)
    assert max_diff(traj, golden.tensors[traj_key]) <= TRAJ_ATOL
    final = lumina.sample(model, cond, uncond, noise.shape, **kwargs)
    assert torch.equal(final, traj[-1]), "the final latent differs from the trajectory's last state"
