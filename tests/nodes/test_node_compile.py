"""Lumina Model Loader's `compile` option: "blocks" gives a MODEL around lumina.compile_model's clone.

The node is wiring only: these tests trace with torch.compile's "eager" backend (dynamo decides
what compiles and when, no code is generated), so they take seconds; inductor's numbers against
eager are tested in tests/lumina/test_compile.py.
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch

from lumina.compile import compile_stats, is_compiled
from nodes_support import empty_latent, encode, flow_sample


@pytest.fixture
def traced_compile(comfyui, monkeypatch):
    loader_module = sys.modules[comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].__module__]
    monkeypatch.setattr(loader_module, "compile_model", functools.partial(loader_module.compile_model, backend="eager"))


def load(comfyui, tiny, **optional):
    (model,) = comfyui.run_node("LuminaModelLoader", ckpt_name=tiny.name(tiny.next_dit), weight_dtype="fp32", **optional)
    return model


def test_compile_is_off_by_default(comfyui, tiny):
    optional = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"].INPUT_TYPES()["optional"]
    assert optional["compile"][0] == ["off", "blocks", "cpu prepack", "blocks + cpu prepack"]
    assert optional["compile"][1]["default"] == "off"
    assert not is_compiled(load(comfyui, tiny).model.diffusion_model)
    assert not is_compiled(load(comfyui, tiny, compile="off").model.diffusion_model)


def test_blocks_sample_like_eager_and_compile_once(comfyui, tiny, gemma, traced_compile):
    eager = load(comfyui, tiny)
    compiled = load(comfyui, tiny, compile="blocks")
    inner = compiled.model.diffusion_model
    assert is_compiled(inner) and type(inner) is type(eager.model.diffusion_model)  # every node still sees a Next-DiT
    assert list(inner.state_dict()) == list(eager.model.diffusion_model.state_dict())  # LoRA keys unchanged

    captions = encode(comfyui, gemma, "a red circle", "")  # different lengths: a padded caption under CFG
    latent = empty_latent(comfyui, 32, 32)
    expected = flow_sample(comfyui, eager, *captions, latent, seed=2)
    out = flow_sample(comfyui, compiled, *captions, latent, seed=2)
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()
    stats = compile_stats(inner)
    assert stats.compiled_calls > 0 and stats.eager_calls == 0
    compiles = stats.compiles
    again = flow_sample(comfyui, compiled, *captions, latent, seed=2)
    assert stats.compiles == compiles and torch.equal(again, out)
    assert not is_compiled(eager.model.diffusion_model)


def test_the_node_compiles_with_inductor(comfyui, tiny):
    stats = compile_stats(load(comfyui, tiny, compile="blocks").model.diffusion_model)  # nothing compiles before a call
    assert (stats.backend, stats.mode, stats.dynamic, stats.compiles) == ("inductor", "default", None, 0)


def test_cpu_prepack_samples_like_plain(comfyui, tiny, gemma):
    from lumina.prepack import is_prepacked, prepack_available, prepacked_bytes

    if not prepack_available():
        pytest.skip("this torch build has no MKL packed GEMM")
    plain = load(comfyui, tiny)
    packed = load(comfyui, tiny, compile="cpu prepack")
    inner = packed.model.diffusion_model
    assert is_prepacked(inner) and isinstance(inner, type(plain.model.diffusion_model))
    assert list(inner.state_dict()) == list(plain.model.diffusion_model.state_dict())
    captions = encode(comfyui, gemma, "a red circle", "")
    latent = empty_latent(comfyui, 32, 32)
    expected = flow_sample(comfyui, plain, *captions, latent, seed=2)
    out = flow_sample(comfyui, packed, *captions, latent, seed=2)
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max() and prepacked_bytes(inner) > 0


def test_cpu_prepack_refuses_what_it_cannot_pack(comfyui, tiny, monkeypatch):
    loader = comfyui.nodes.NODE_CLASS_MAPPINGS["LuminaModelLoader"]
    with pytest.raises(ValueError, match="'cpu prepack' packs fp32 weights: set weight_dtype to fp32 .this load gives fp8 blocks"):
        comfyui.run_node("LuminaModelLoader", ckpt_name=tiny.name(tiny.next_dit), weight_dtype="fp8_e4m3fn", compile="cpu prepack")
    bridge = sys.modules[loader.__module__.rsplit(".", 1)[0] + ".bridge"]
    monkeypatch.setattr(bridge, "load_device_type", lambda: "cuda")
    with pytest.raises(ValueError, match="'cpu prepack' is for models run on the CPU; this ComfyUI runs models on cuda"):
        load(comfyui, tiny, compile="cpu prepack")


def test_blocks_with_cpu_prepack_compile_with_packed_weights(comfyui, tiny, gemma, traced_compile):
    plain = load(comfyui, tiny)
    both = load(comfyui, tiny, compile="blocks + cpu prepack")
    inner = both.model.diffusion_model
    assert is_compiled(inner) and compile_stats(inner).prepack
    captions = encode(comfyui, gemma, "a red circle", "")
    latent = empty_latent(comfyui, 32, 32)
    expected = flow_sample(comfyui, plain, *captions, latent, seed=2)
    out = flow_sample(comfyui, both, *captions, latent, seed=2)
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max() and compile_stats(inner).compiled_calls > 0
    with pytest.raises(ValueError, match="'blocks \\+ cpu prepack' packs fp32 weights"):
        comfyui.run_node("LuminaModelLoader", ckpt_name=tiny.name(tiny.next_dit), weight_dtype="bf16", compile="blocks + cpu prepack")
