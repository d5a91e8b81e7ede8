"""Golden fixtures made by running the official Lumina-T2X code with seeded random weights.

Each set in tests/fixtures/golden/<name>/ has manifest.json (config, key→shape table, a
description of every tensor), model.safetensors (official key names) and tensors.safetensors
(inputs `in.*`, forward outputs `fwd.*`, RoPE tables `rope.*`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina

GOLDEN_DIR = Path(__file__).parents[1] / "fixtures" / "golden"
GOLDEN_FAMILIES = {"nextdit_tiny": "next_dit", "flagdit_tiny": "flag_dit"}
GOLDEN_NAMES = tuple(GOLDEN_FAMILIES)


@dataclass(frozen=True)
class Golden:
    name: str
    family: str
    manifest: dict
    state_dict: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.manifest["tensors"] if k.startswith(prefix))

    def model(self, dtype: torch.dtype = torch.float32) -> lumina.LuminaDiT:
        """A fresh model with the golden weights, in eval mode."""
        m = lumina.build_model(lumina.infer_config(self.state_dict))
        m.load_state_dict(self.state_dict, strict=True)
        return m.to(dtype).eval()


@lru_cache(maxsize=None)
def load_golden(name: str) -> Golden:
    root = GOLDEN_DIR / name
    return Golden(
        name=name,
        family=GOLDEN_FAMILIES[name],
        manifest=json.loads((root / "manifest.json").read_text()),
        state_dict=load_file(str(root / "model.safetensors")),
        tensors=load_file(str(root / "tensors.safetensors")),
    )


def golden_keys(prefix: str, suffix: str = "") -> list[tuple[str, str]]:
    """(set name, tensor name) for every manifest tensor starting with prefix (and ending with
    suffix), in both sets."""
    return [(name, key) for name in GOLDEN_NAMES for key in load_golden(name).keys(prefix) if key.endswith(suffix)]


# argname → (prefix, suffix) of the golden tensors a test taking that argument runs over
GOLDEN_KEY_ARGS = {
    "fwd_key": ("fwd.", ""),
    "rope_key": ("rope.", ""),
    "emb_key": ("emb.", ""),
    "cfg_key": ("cfg.", ""),
    "traj_key": ("sample.", ".traj"),
    "tgrid_key": ("sample.", ".tgrid"),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests using `golden` run once per set; with an argument of GOLDEN_KEY_ARGS (`fwd_key`,
    `rope_key`, `emb_key`, `cfg_key`, `traj_key`, `tgrid_key`) they run once per golden tensor of
    that kind, paired with its own set."""
    if "golden" not in metafunc.fixturenames:
        return
    for argname, (prefix, suffix) in GOLDEN_KEY_ARGS.items():
        if argname in metafunc.fixturenames:
            pairs = golden_keys(prefix, suffix)
            metafunc.parametrize(("golden", argname), pairs, indirect=["golden"], ids=[f"{n}:{k}" for n, k in pairs])
            return
    metafunc.parametrize("golden", GOLDEN_NAMES, indirect=True)


@pytest.fixture(scope="session")
def golden(request: pytest.FixtureRequest) -> Golden:
    """One golden set (parametrised over both model families by pytest_generate_tests)."""
    return load_golden(request.param)


@pytest.fixture(scope="session")
def all_goldens() -> tuple[Golden, ...]:
    """Every golden set at once (for checks that span the sets)."""
    return tuple(load_golden(name) for name in GOLDEN_NAMES)


@pytest.fixture
def model(golden: Golden) -> lumina.LuminaDiT:
    """Fresh fp32 model with the golden set's weights."""
    return golden.model()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def captions(golden: Golden) -> tuple[lumina.Conditioning, lumina.Conditioning]:
    """(cond, uncond): the golden set's two CFG captions (row 0 the prompt, row 1 the negative)."""
    feats, mask = golden.tensors["in.cfg_cap_feats"], golden.tensors["in.cfg_cap_mask"]
    return lumina.Conditioning(feats[:1], mask[:1]), lumina.Conditioning(feats[1:], mask[1:])


@pytest.fixture
def model_calls(model: lumina.LuminaDiT):
    """A list that grows by one entry (the batch size) per forward call of `model`."""
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    yield calls
    handle.remove()
