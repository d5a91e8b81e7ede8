"""lumina.prepack_model: fp32 CPU linears on MKL-packed weights give the official outputs, see
weight changes, leave training and the model passed in alone, and refuse what they cannot do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lumina
from lumina.audio_checkpoints import load_audio_model
from lumina.audio_sampling import audio_velocity
from lumina.config import infer_config
from lumina.model import build_model
from lumina.compile import compile_model, compile_stats
from lumina.prepack import compiled_packed_bytes, is_prepacked, packing_backend, prepack_available, prepack_model, prepacked_bytes
from lumina_support import tiny_random_model

pytestmark = pytest.mark.skipif(not prepack_available(), reason="this torch build has no MKL packed GEMM")

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"
TOL = 1e-5  # the golden forwards' tolerance: packing changes the summation order only


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def _close(fast: torch.Tensor, plain: torch.Tensor) -> bool:
    """Equal but for float rounding, relative to the output's scale (a stale packed weight is off by O(1))."""
    return _diff(fast, plain) <= TOL * float(plain.abs().max())


def _next_dit_call(batch: int = 2):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 16, 16, generator=generator)
    return x, torch.full((batch,), 0.3), torch.randn(batch, 5, 16, generator=generator)


@pytest.fixture(scope="module")
def music():
    root = GOLDEN / "lumina_music_tiny"
    manifest = json.loads((root / "manifest.json").read_text())
    model, _ = load_audio_model(load_file(str(root / "cfm.safetensors")), max_len=manifest["set_config"]["dit"]["max_len"])
    return model, load_file(str(root / "tensors.safetensors"))


def test_the_audio_dit_prepacked_reproduces_the_official_forward_and_cfg_call(music):
    model, t = music
    packed = prepack_model(model, min_rows=1)
    assert isinstance(packed, lumina.AudioDiT) and is_prepacked(packed) and not is_prepacked(model)
    with torch.inference_mode():
        assert _diff(packed(t["in.x"], t["in.t"], t["in.context"]), t["dit.out"]) <= TOL
        guided = audio_velocity(packed, t["in.cond"], t["in.uncond"], 5.0)(t["in.cfg_x"], t["cfg.t"])
    assert _diff(guided, t["cfg.out"]) <= TOL
    assert packed._lumina_prepacked.packs > 0 and prepacked_bytes(packed) > 0


def test_lumina_video_prepacked_reproduces_the_official_forwards():
    root = GOLDEN / "lumina_video_tiny"
    state, t = load_file(str(root / "model.safetensors")), load_file(str(root / "tensors.safetensors"))
    model = build_model(infer_config(state))
    model.load_state_dict(state, strict=True)
    packed = prepack_model(model.eval(), min_rows=1)
    with torch.inference_mode():
        out = packed(t["in.x"], t["in.t"], t["in.cap_feats"], t["in.cap_mask"], t["in.motion_score"], 2, 2)
        videos = [t["in.list_x0"], t["in.list_x1"], t["in.list_x2"]]  # differently sized: one batch per size
        outs = packed(videos, t["in.list_t"], t["in.list_cap_feats"], t["in.list_cap_mask"], t["in.list_motion_score"], 2, 2)
    assert _diff(out, t["fwd.p2f2.out"]) <= TOL
    assert all(_diff(o, t[f"fwd_list.p2f2.out{i}"]) <= TOL for i, o in enumerate(outs))


def test_weights_are_packed_once_and_shared_with_the_model():
    model = tiny_random_model("next_dit", n_layers=2, dim=64)
    packed = prepack_model(model, min_rows=1)
    assert type(model).__name__ == "NextDiT" and not hasattr(model, "_lumina_prepacked")
    assert packed.state_dict().keys() == model.state_dict().keys()
    assert all(a is b for a, b in zip(packed.parameters(), model.parameters()))
    x, t, cap = _next_dit_call()
    with torch.inference_mode():
        plain, first = model(x, t, cap), packed(x, t, cap)
        packs = packed._lumina_prepacked.packs
        second = packed(x, t, cap)
    assert _close(first, plain)
    assert torch.equal(first, second) and packed._lumina_prepacked.packs == packs > 0
    assert prepacked_bytes(packed) >= sum(p.numel() * 4 for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2
                                          and "layers" in n)


def test_a_weight_changed_in_place_or_replaced_is_repacked():
    model = tiny_random_model("next_dit", n_layers=2, dim=64)
    packed = prepack_model(model, min_rows=1)
    x, t, cap = _next_dit_call(1)
    with torch.inference_mode():
        packed(x, t, cap)
    with torch.no_grad():
        model.layers[0].feed_forward.w2.weight.mul_(2)  # a LoRA-style patch, in place
    with torch.inference_mode():
        assert _close(packed(x, t, cap), model(x, t, cap))
    attention = model.layers[1].attention
    attention.wq.weight = torch.nn.Parameter(attention.wq.weight.detach() * 0.5)  # ComfyUI's set_attr_param
    attention.wo.weight.data = attention.wo.weight.data * -1.0  # new data, same Parameter
    with torch.inference_mode():
        assert _close(packed(x, t, cap), model(x, t, cap))


def test_each_row_count_is_packed_once_and_the_least_recent_dropped_beyond_the_limit():
    model = tiny_random_model("next_dit", n_layers=1, dim=64)
    packed = prepack_model(model, min_rows=1)
    cache = packed._lumina_prepacked
    with torch.inference_mode():
        packed(*_next_dit_call(2))
        per_call = cache.packs
        x, t, cap = _next_dit_call(1)  # half the rows: every packed weight packed for them too, once
        assert _close(packed(x, t, cap), model(x, t, cap))
        assert cache.packs == 2 * per_call
        for _ in range(2):  # alternating sizes (a list of videos) reuse both packings
            packed(x, t, cap), packed(*_next_dit_call(2))
        assert cache.packs == 2 * per_call
        for batch in (3, 4, 5):  # five row counts: the least recently used (batch 1's) is dropped
            packed(*_next_dit_call(batch))
        assert cache.packs == (2 + 3) * per_call
        packed(*_next_dit_call(2))
        assert cache.packs == 5 * per_call
        packed(x, t, cap)
    assert cache.packs == 6 * per_call and lumina.prepack.ROW_COUNTS_KEPT == 4


def test_training_and_small_gemms_take_the_plain_path():
    model = tiny_random_model("next_dit", n_layers=1, dim=64)
    packed = prepack_model(model, min_rows=1)
    x, t, cap = _next_dit_call(1)
    packed(x, t, cap).sum().backward()  # gradients recorded: nothing packed
    assert model.layers[0].attention.wq.weight.grad is not None and packed._lumina_prepacked.packs == 0
    large = prepack_model(model, min_rows=10**6)
    with torch.inference_mode():
        large(x, t, cap)
    assert large._lumina_prepacked.packs == 0


def test_what_cannot_be_prepacked_is_refused_by_name():
    model = tiny_random_model("next_dit", n_layers=1, dim=64)
    packed = prepack_model(model)
    with pytest.raises(lumina.LuminaInputError, match="prepacked already"):
        prepack_model(packed)
    with pytest.raises(lumina.LuminaInputError, match="compile_model does not take a prepack_model clone: .*prepack=True"):
        lumina.compile_model(packed)
    with pytest.raises(lumina.LuminaInputError, match="prepack_model does not take a compiled model: .*prepack=True"):
        prepack_model(lumina.compile_model(model, backend="eager"))
    with pytest.raises(lumina.LuminaInputError, match="min_rows"):
        prepack_model(model, min_rows=0)
    with pytest.raises(lumina.LuminaInputError, match="torch module"):
        prepack_model("model.safetensors")
    with pytest.raises(lumina.LuminaInputError, match="prepack_model"):
        prepacked_bytes(model)


# -- compiled blocks with packed weights (compile_model(prepack=True)) ---------------------------------
def _linear_targets(fn, *args) -> list:
    """The call targets of the graph torch.compile traces for fn(*args), after the packing rewrite."""
    seen = []

    def backend(graph_module, example_inputs):
        compiled = packing_backend("eager", "default", None)(graph_module, example_inputs)
        seen.extend(str(n.target) for n in graph_module.graph.nodes if n.op == "call_function" and "linear" in str(n.target))
        return compiled

    torch._dynamo.reset()
    torch.compile(fn, backend=backend)(*args)
    return seen


def test_the_rewrite_takes_fp32_cpu_linears_without_gradients_only():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(32, 8)
    with torch.no_grad():
        assert _linear_targets(layer, x) == ["lumina.packed_linear.default"]
        assert _linear_targets(layer.to(torch.bfloat16), x.to(torch.bfloat16)) == ["<built-in function linear>"]
    layer = torch.nn.Linear(8, 4)
    assert _linear_targets(layer, x) == ["<built-in function linear>"]  # gradients: torch's GEMM


def test_compiled_blocks_with_packed_weights_equal_eager_and_train_as_before():
    model = tiny_random_model("next_dit", n_layers=2, dim=64)
    compiled = compile_model(model, backend="eager", prepack=True)  # traced: the rewrite, no code generation
    x, t, cap = _next_dit_call()
    before = compiled_packed_bytes()
    with torch.inference_mode():
        plain, fast = model(x, t, cap), compiled(x, t, cap)
    assert _close(fast, plain) and compiled_packed_bytes() > before
    stats = compile_stats(compiled)
    assert stats.prepack and stats.compiled_calls == 2 and stats.eager_calls == 0
    compiled(x, t, cap).sum().backward()  # a training call compiles its own graph, with torch's GEMMs
    assert model.layers[0].attention.wq.weight.grad is not None


def test_the_audio_dit_compiled_with_packed_weights_reproduces_the_official_forward(music):
    model, t = music
    compiled = compile_model(model, prepack=True)  # inductor
    before = compiled_packed_bytes()
    with torch.inference_mode():
        assert _diff(compiled(t["in.x"], t["in.t"], t["in.context"]), t["dit.out"]) <= TOL
    assert compile_stats(compiled).compiles > 0 and compiled_packed_bytes() > before
