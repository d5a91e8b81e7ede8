"""lumina.compile_model: compiled blocks equal eager ones, features keep working, no recompiles.

Stated tolerance (fp32 on CPU): the largest difference between a compiled and an eager output is
at most 1e-5 of the eager output's largest magnitude, for one forward and for a short sampling
run (measured: about 3e-7; inductor reorders float sums, so bit equality is not expected).

Inductor builds C++ for every fused kernel (about 20 s of CPU for a block on a cold cache), so
the tests that need its numbers compile two graphs in all: one Next-DiT block (shared by the
Next-DiT forward, the sampling run and Lumina-Video, whose blocks are Next-DiT's at the same
shapes) and one Flag-DiT block. What recompiles is dynamo's decision, made before any backend
runs, so the recompilation and fallback tests trace with the "eager" backend (no code
generated). Compile times are printed with -s.
"""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.compile import acts_in_attention, compile_model, compile_stats, is_compiled
from lumina.errors import LuminaInputError
from lumina.model.hooks import ForwardFeature, ForwardHook
from lumina.model.options import ForwardOptions
from lumina.model.rope import apply_rope, real_rotations, rope_angles, rope_table
from lumina_support import tiny_random_model

TOLERANCE = 1e-5  # max |compiled − eager| / max |eager|, fp32 on CPU


def relative_error(compiled: torch.Tensor, eager: torch.Tensor) -> float:
    assert compiled.shape == eager.shape
    return float((compiled - eager).abs().max() / eager.abs().max())


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.fixture(scope="module", autouse=True)
def fresh_dynamo():
    """Other tests' compiled code must not count against torch's per-function recompile limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def next_dit() -> tuple[lumina.LuminaDiT, lumina.LuminaDiT]:
    """(eager, inductor-compiled): dim 64, 4 heads of 16 (Lumina-Video's block shapes)."""
    model = tiny_random_model("next_dit", n_layers=3, dim=64)
    return model, compile_model(model)


@pytest.fixture(scope="module")
def traced() -> tuple[lumina.LuminaDiT, lumina.LuminaDiT]:
    """(eager, compiled with the "eager" backend): dynamo's guards without code generation."""
    model = tiny_random_model("next_dit", n_layers=3, dim=64, seed=1)
    return model, compile_model(model, backend="eager")


@torch.inference_mode()  # inference tensors, like lumina.sample's: a tensor's kind is part of the guards
def inputs(batch: int = 2, side: int = 8, seed: int = 0, cap_dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, side, side, generator=g), torch.randn(batch, 5, cap_dim, generator=g)


def captions(cond_tokens: int, uncond_tokens: int) -> tuple[lumina.Conditioning, lumina.Conditioning]:
    g = torch.Generator().manual_seed(3)
    return tuple(lumina.Conditioning(torch.randn(1, n, 16, generator=g), torch.ones(1, n, dtype=torch.bool))
                 for n in (cond_tokens, uncond_tokens))


# -- RoPE without complex numbers ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_rope_equals_complex_rope_bit_for_bit(dtype):
    positions = torch.stack(torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij"), -1).reshape(-1, 2)
    rotations = rope_table(rope_angles(positions, 16))[None]
    pairs = real_rotations(rotations)
    assert pairs.dtype == torch.float32 and pairs.shape == (1, 42, 8, 2)
    assert pairs.data_ptr() == rotations.data_ptr()  # a view, not a copy
    assert real_rotations(pairs) is pairs
    x = torch.randn(3, 42, 4, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    assert torch.equal(apply_rope(x, pairs), apply_rope(x, rotations))


# -- the clone --------------------------------------------------------------------------------------
def test_compiling_leaves_the_model_eager_and_shares_its_weights(next_dit):
    model, compiled = next_dit
    assert is_compiled(compiled) and not is_compiled(model)
    assert {type(b).__name__ for b in model.layers} == {"NextDiTBlock"}
    assert {type(b).__name__ for b in compiled.layers} == {"CompiledNextDiTBlock"}
    assert model.layers is not compiled.layers
    ours, theirs = model.state_dict(), compiled.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].data_ptr() == theirs[k].data_ptr() for k in ours)
    assert compiled.layers[1].attention is model.layers[1].attention
    with pytest.raises(LuminaInputError, match="not made by lumina.compile_model"):
        compile_stats(model)
    with pytest.raises(LuminaInputError, match="compile mode 'fast' is not one of default"):
        compile_model(model, mode="fast")
    with pytest.raises(LuminaInputError, match="backend 'fast' is not one of"):
        compile_model(model, backend="fast")
    with pytest.raises(LuminaInputError, match="needs a Lumina model"):
        compile_model(torch.nn.Linear(2, 2))


# -- inductor: equal to eager -----------------------------------------------------------------------
def test_next_dit_equals_eager_and_sampling_steps_reuse_one_graph(next_dit):
    model, compiled = next_dit
    x, cap = inputs()
    stats = compile_stats(compiled)
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        for i, t in enumerate((0.1, 0.55, 0.9)):
            before = graphs()
            out = compiled(x, torch.full((2,), t), cap)
            assert relative_error(out, model(x, torch.full((2,), t), cap)) <= TOLERANCE
            if i:  # t changes every step; the graph does not
                assert graphs() == before
    assert stats.compiles == 1 and stats.compiled_calls == 9 and stats.eager_calls == 0
    print(f"\nNext-DiT block compiled in {stats.compile_seconds:.1f} s")


def test_a_short_sampling_run_equals_eager(next_dit):
    model, compiled = next_dit
    cond, uncond = captions(5, 5)  # the batch-2 CFG forward at the shapes compiled above
    run = dict(latent_shape=(1, 4, 8, 8), steps=5, cfg=4.0, seed=5)
    stats = compile_stats(compiled)
    compiles, calls = stats.compiles, stats.compiled_calls
    out = lumina.sample(compiled, cond, uncond, **run)
    assert relative_error(out, lumina.sample(model, cond, uncond, **run)) <= TOLERANCE
    assert stats.compiles == compiles and stats.compiled_calls == calls + 4 * 3


def test_lumina_video_equals_eager_on_the_graph_compiled_for_next_dit(next_dit):
    from lumina.model.lumina_video import LuminaVideo
    from lumina.video_config import LuminaVideoConfig

    config = LuminaVideoConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=16, multiple_of=16,
                               patches=((2, 1),))
    assert config.hidden_dim == next_dit[0].config.hidden_dim
    model = LuminaVideo(config)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    compiled = compile_model(model)
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        x, cap = torch.randn(2, 16, 1, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
        args = (torch.tensor([0.3, 0.6]), cap, torch.ones(2, 5, dtype=torch.bool), torch.tensor([1.0, 5.0]), 2, 1)
        assert relative_error(compiled(x, *args), model(x, *args)) <= TOLERANCE
    stats = compile_stats(compiled)
    assert (stats.compiles, stats.compiled_calls, stats.eager_calls) == (0, 2, 0)  # regional: one graph per block class


def test_flag_dit_with_a_padded_caption_equals_eager():
    model = tiny_random_model("flag_dit", n_layers=2, dim=32)
    compiled = compile_model(model)
    x, cap = inputs(side=6)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])  # row by row attention: the graph splits around it
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        for t in (0.2, 0.7):
            out = compiled(x, torch.full((2,), t), cap, mask)
            assert relative_error(out, model(x, torch.full((2,), t), cap, mask)) <= TOLERANCE
    stats = compile_stats(compiled)
    assert stats.compiles == 1 and stats.compiled_calls == 4 and stats.eager_calls == 0
    print(f"\nFlag-DiT block compiled in {stats.compile_seconds:.1f} s")


def test_the_audio_dit_compiles_its_blocks_and_keeps_its_keys():
    """The 1-D Flag-DiT keeps its blocks in `blocks` (the official name): they are compiled and the
    state-dict keys stay."""
    from lumina.model.audio_dit import AudioDiT, AudioDiTConfig

    g = torch.Generator().manual_seed(0)
    model = AudioDiT(AudioDiTConfig(dim=64, n_layers=2, n_heads=4, in_channels=4, cap_feat_dim=16, multiple_of=16)).eval()
    with torch.inference_mode():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    compiled = compile_model(model)
    before = graphs()
    assert compiled.state_dict().keys() == model.state_dict().keys()
    assert all(type(b).__name__ == "CompiledAudioDiTBlock" for b in compiled.blocks)
    assert all(type(b).__name__ == "AudioDiTBlock" for b in model.blocks)
    x, cap = torch.randn(2, 4, 24, generator=g), torch.randn(2, 7, 16, generator=g)
    with torch.inference_mode():
        for t in (0.2, 0.7):
            assert relative_error(compiled(x, torch.full((2,), t), cap), model(x, torch.full((2,), t), cap)) <= TOLERANCE
    stats = compile_stats(compiled)
    assert stats.compiles == 1 and stats.compiled_calls == 4 and stats.eager_calls == 0
    # one graph for the block: its fused projections' storage check stays out of compiled code
    # (it split the block into 12 graphs, and compiling then gained nothing)
    assert graphs() - before == 1
    print(f"\naudio DiT block compiled in {stats.compile_seconds:.1f} s")


# -- what recompiles (dynamo's guards, "eager" backend) ----------------------------------------------
def test_sizes_that_repeat_are_not_recompiled(traced):
    model, compiled = traced
    stats = compile_stats(compiled)
    seen = []
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        for side in (8, 12, 8, 12, 16, 8):
            x, cap = inputs(side=side)
            out = compiled(x, torch.full((2,), 0.3), cap)
            assert relative_error(out, model(x, torch.full((2,), 0.3), cap)) <= TOLERANCE
            seen.append(stats.compiles)
    # 8 compiles a static graph; 12 one dynamic graph that 16 (and every later size) reuses
    assert seen == [1, 2, 2, 2, 2, 2]


def test_padded_captions_under_cfg_compile_once_per_caption_lengths(traced):
    model, compiled = traced
    stats = compile_stats(compiled)
    cond, uncond = captions(6, 2)  # the negative caption is padded: one masked cross-attention call
    run = dict(latent_shape=(1, 4, 8, 8), steps=5, cfg=4.0, seed=5)
    out = lumina.sample(compiled, cond, uncond, **run)
    assert relative_error(out, lumina.sample(model, cond, uncond, **run)) <= TOLERANCE
    compiles, before = stats.compiles, graphs()
    again = lumina.sample(compiled, cond, uncond, **run)  # new mask tensors, same lengths
    assert stats.compiles == compiles and graphs() == before
    assert torch.equal(again, out)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_a_padded_batch_with_new_caption_lengths_reuses_its_graph(traced, grad):
    """A training batch pads its captions to one width but each step's row lengths differ: the
    lengths never become guards (before, every new length recompiled the block until torch's
    limit of 8, then ran it eager). Training reads them eagerly; inference decides in the graph."""
    model, compiled = traced
    stats = compile_stats(compiled)
    x, _ = inputs(batch=3)
    g = torch.Generator().manual_seed(4)
    seen = []
    for lengths in ((5, 3, 2), (5, 4, 1), (4, 2, 2), (5, 5, 3), (2, 1, 5), (1, 5, 2), (3, 2, 1)):
        cap = torch.randn(3, 5, 16, generator=g)
        mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
        with torch.set_grad_enabled(grad):
            out = compiled(x, torch.full((3,), 0.3), cap, mask)
            assert relative_error(out.detach(), model(x, torch.full((3,), 0.3), cap, mask).detach()) <= TOLERANCE
        seen.append(stats.compiles)
    assert seen == [seen[0]] * len(seen), seen


def test_inference_with_a_padded_caption_compiles_the_block_as_one_graph(traced):
    """Padded keys alone (CFG's shorter negative caption) are decided inside the compiled graph in
    inference: the block is one graph (the eager decision split it at every masked call)."""
    model, compiled = traced
    x, _ = inputs(batch=2, side=4, seed=7)  # a size no other test compiles
    g = torch.Generator().manual_seed(8)
    cap = torch.randn(2, 5, 16, generator=g)
    before = graphs()
    for lengths in ((5, 2), (3, 1)):
        mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
        with torch.inference_mode():
            out = compiled(x, torch.full((2,), 0.3), cap, mask)
            assert relative_error(out, model(x, torch.full((2,), 0.3), cap, mask)) <= TOLERANCE
    assert graphs() - before == 1


def test_a_row_with_no_key_gets_zeros_inside_compiled_inference_as_eager():
    """The in-graph decision keeps the eager path's answer for a row whose keys are all masked
    (zeros; the masked kernel alone gives NaN)."""
    from lumina.model.attention import attend

    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 6, 4, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])
    with torch.inference_mode():
        eager = attend(q, k, v, key_mask=mask)
        traced = torch.compile(lambda *a: attend(*a, key_mask=mask), backend="eager", fullgraph=True)(q, k, v)
    assert torch.equal(eager[1], torch.zeros_like(eager[1])) and torch.equal(traced, eager)


# -- features through the seam -----------------------------------------------------------------------
class HalveSelfAttention(ForwardFeature):
    """An attention-level feature: every self-attention output halved."""

    def begin(self, info):
        class Hook(ForwardHook):
            def after_self_attention(self, site, q, k, k_unrotated, v, out):
                return out * 0.5

        return Hook()


class CountBlocks(ForwardFeature, ForwardHook):
    """A feature acting between blocks only (like the ComfyUI interrupt check)."""

    def __init__(self) -> None:
        self.layers: list[int] = []

    def begin(self, info):
        return self

    def before_block(self, layer: int) -> None:
        self.layers.append(layer)


def test_features_inside_attention_run_eager_and_between_blocks_stay_compiled(traced):
    model, compiled = traced
    assert acts_in_attention(HalveSelfAttention().begin(None)) and not acts_in_attention(CountBlocks())
    stats = compile_stats(compiled)
    x, cap = inputs()
    t = torch.full((2,), 0.4)
    with torch.inference_mode():  # as lumina.sample and ComfyUI run it (no grad mode recompiles between them)
        compiled(x, t, cap)  # compiled at this size (if not yet)
        halved = ForwardOptions(features=(HalveSelfAttention(),))
        eager_calls, compiled_calls = stats.eager_calls, stats.compiled_calls
        out = compiled(x, t, cap, None, halved)
        assert torch.equal(out, model(x, t, cap, None, halved))  # the eager blocks, bit for bit
        assert not torch.allclose(out, model(x, t, cap))
        assert stats.eager_calls == eager_calls + 3 and stats.compiled_calls == compiled_calls

        counter = CountBlocks()
        before = graphs()
        out = compiled(x, t, cap, None, ForwardOptions(features=(counter,)))
        assert counter.layers == [0, 1, 2]
        assert stats.compiled_calls == compiled_calls + 3 and graphs() == before
        assert relative_error(out, model(x, t, cap)) <= TOLERANCE


def test_a_backend_that_cannot_compile_is_one_clear_error():
    from torch._dynamo import list_backends, register_backend

    if "lumina_test_cannot_compile" not in list_backends(exclude_tags=()):
        def cannot_compile(graph, example_inputs):
            raise RuntimeError("no C++ compiler here")

        register_backend(cannot_compile, name="lumina_test_cannot_compile")
    model = tiny_random_model("next_dit", n_layers=1, dim=32)
    compiled = compile_model(model, backend="lumina_test_cannot_compile")
    x, cap = inputs()
    with torch.inference_mode(), pytest.raises(lumina.LuminaError, match="could not compile NextDiTBlock: .*compile off"):
        compiled(x, torch.full((2,), 0.5), cap)
