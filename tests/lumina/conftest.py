"""Golden fixtures made by running the official Lumina-T2X code with seeded random weights.

Each set in tests/fixtures/golden/<name>/ has manifest.json (config, key→shape table, a
description of every tensor), model.safetensors (official key names) and tensors.safetensors
(inputs `in.*`, forward outputs `fwd.*`, RoPE tables `rope.*`, ...).

The per-call feature tests (regional prompts, shared attention) use small random models of both
families instead (`tiny_model`) and an `attention_recorder` that captures every attention call.
"""

from __future__ import annotations

import copy
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


# -- small random models for the training-free features ------------------------------------

TINY_FAMILIES = ("next_dit", "flag_dit")


def tiny_random_model(family: str, *, n_layers: int = 2, seed: int = 0) -> lumina.LuminaDiT:
    """A small fp32 model in eval mode with every parameter drawn from N(0, 0.2) under `seed`,
    so the zero-initialised gates are open and every path changes the output."""
    extra = {"n_kv_heads": 2} if family == "next_dit" else {}
    config = lumina.LuminaConfig(family, dim=64, n_layers=n_layers, n_heads=4, cap_feat_dim=16, multiple_of=16, **extra)
    model = lumina.build_model(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request: pytest.FixtureRequest) -> lumina.LuminaDiT:
    """A fresh `tiny_random_model` of each family in turn."""
    return tiny_random_model(request.param)


@dataclass
class AttentionCall:
    """One LuminaAttention call: its inputs (ctx shallow-copied, so `ctx.layer` is the one it ran
    with), its output and its final cross-attention output (B, L, H, head_dim): the regional mix
    when regions were given, else the plain cross-attention to the row's caption."""

    layer: int
    x: torch.Tensor
    cap_y: torch.Tensor
    ctx: object
    region_y: torch.Tensor | None
    output: torch.Tensor | None = None
    cross: torch.Tensor | None = None

    @property
    def inputs(self) -> tuple:
        return self.x, self.cap_y, self.ctx, self.region_y


class AttentionRecorder:
    """Records every call of the model's attention modules, whether made by the model's forward
    or directly by a test, in call order."""

    def __init__(self, model: lumina.LuminaDiT) -> None:
        self.model = model
        self.calls: list[AttentionCall] = []
        self._handles = []
        self._wrapped = []
        for i, block in enumerate(model.layers):
            attn = block.attention
            self._handles.append(attn.register_forward_pre_hook(self._pre_hook(i)))
            self._handles.append(attn.register_forward_hook(self._post_hook))
            self._wrap(attn)

    def _pre_hook(self, layer: int):
        def hook(module, args):
            x, cap_y, ctx, *rest = args
            self.calls.append(AttentionCall(layer, x, cap_y, copy.copy(ctx), rest[0] if rest else None))

        return hook

    def _post_hook(self, module, args, output) -> None:
        self.calls[-1].output = output

    def _wrap(self, attn) -> None:
        plain, regional = attn._cross_attention, attn._regional_cross_attention
        nested = []

        def cross_attention(*args, **kwargs):
            out = plain(*args, **kwargs)
            if not nested:  # the row's own caption, not a region inside _regional_cross_attention
                self.calls[-1].cross = out
            return out

        def regional_cross_attention(*args, **kwargs):
            nested.append(True)
            try:
                out = regional(*args, **kwargs)
            finally:
                nested.pop()
            self.calls[-1].cross = out
            return out

        attn._cross_attention, attn._regional_cross_attention = cross_attention, regional_cross_attention
        self._wrapped.append(attn)

    def run(self, *args, **kwargs) -> tuple[torch.Tensor, list[AttentionCall]]:
        """model(*args, **kwargs) under no_grad → (output, that forward's calls, one per layer)."""
        start = len(self.calls)
        with torch.no_grad():
            out = self.model(*args, **kwargs)
        return out, self.calls[start:]

    def call(self, layer: int, *inputs) -> AttentionCall:
        """Call layer `layer`'s attention module directly → its recorded call."""
        with torch.no_grad():
            self.model.layers[layer].attention(*inputs)
        return self.calls[-1]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for attn in self._wrapped:
            del attn._cross_attention, attn._regional_cross_attention
        self._handles, self._wrapped = [], []


@pytest.fixture
def attention_recorder(tiny_model: lumina.LuminaDiT):
    """An AttentionRecorder on `tiny_model`."""
    recorder = AttentionRecorder(tiny_model)
    yield recorder
    recorder.remove()
