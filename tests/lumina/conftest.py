"""Golden fixtures made by running the official Lumina-T2X code with seeded random weights.

Each set in tests/fixtures/golden/<name>/ has manifest.json (config, key→shape table, a
description of every tensor), model.safetensors (official key names) and tensors.safetensors
(inputs `in.*`, forward outputs `fwd.*`, RoPE tables `rope.*`, ...).

The per-call feature tests (regional prompts, shared attention) use small random models of both
families instead (`tiny_model`) and an `attention_recorder` that captures every attention call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina
from lumina_support import tiny_random_model
from lumina.features.compositional import RegionalHook
from lumina.features.style_shared import SharedHook
from lumina.model.attention import LayerContext
from lumina.model.hooks import ForwardHook

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


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request: pytest.FixtureRequest) -> lumina.LuminaDiT:
    """A fresh `tiny_random_model` of each family in turn."""
    return tiny_random_model(request.param)


@dataclass
class AttentionCall:
    """One LuminaAttention call: its inputs (the LayerContext as the model built it, without the
    recorder's own hook), its output and its final cross-attention output (B, L, H, head_dim):
    after every feature hook (the regional mix when regions were given), as the gate sees it."""

    layer: int
    x: torch.Tensor
    cap_y: torch.Tensor
    ctx: LayerContext
    caption_norm: object
    output: torch.Tensor | None = None
    cross: torch.Tensor | None = None

    @property
    def inputs(self) -> tuple:
        return self.x, self.cap_y, self.ctx, self.layer, self.caption_norm

    def hook(self, kind: type):
        """The call's feature hook of type `kind` (None without one)."""
        found = [h for h in self.ctx.hooks if isinstance(h, kind)]
        return found[0] if found else None

    @property
    def regional(self) -> RegionalHook | None:
        return self.hook(RegionalHook)

    @property
    def shared(self) -> SharedHook | None:
        return self.hook(SharedHook)

    def inputs_with_hooks(self, *hooks) -> tuple:
        """These inputs with the feature hooks replaced (none: a plain attention call)."""
        return self.x, self.cap_y, replace(self.ctx, hooks=tuple(hooks)), self.layer, self.caption_norm


class _CrossRecorder(ForwardHook):
    """Appended last to every recorded call's hooks: sees the final cross-attention output."""

    def __init__(self, recorder: "AttentionRecorder") -> None:
        self.recorder = recorder

    def after_cross_attention(self, site, q, out):
        self.recorder.calls[-1].cross = out
        return out


class AttentionRecorder:
    """Records every call of the model's attention modules, whether made by the model's forward
    or directly by a test, in call order."""

    def __init__(self, model: lumina.LuminaDiT) -> None:
        self.model = model
        self.calls: list[AttentionCall] = []
        self._handles = []
        self._cross = _CrossRecorder(self)
        for block in model.layers:
            attn = block.attention
            self._handles.append(attn.register_forward_pre_hook(self._pre_hook))
            self._handles.append(attn.register_forward_hook(self._post_hook))

    def _pre_hook(self, module, args):
        x, cap_y, ctx, layer, caption_norm = args
        self.calls.append(AttentionCall(layer, x, cap_y, ctx, caption_norm))
        return x, cap_y, replace(ctx, hooks=ctx.hooks + (self._cross,)), layer, caption_norm

    def _post_hook(self, module, args, output) -> None:
        self.calls[-1].output = output

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
        self._handles = []


@pytest.fixture
def attention_recorder(tiny_model: lumina.LuminaDiT):
    """An AttentionRecorder on `tiny_model`."""
    recorder = AttentionRecorder(tiny_model)
    yield recorder
    recorder.remove()

