"""lumina.memory: the sampling memory estimate, the largest size that fits, and the refusal.

The estimate is checked for its structure (monotone, linear in the batch, the attention path's
L² term, dtype) on configs alone, and once against torch's own allocation record of a real
forward of a small model (the profiler's memory events: deterministic, unlike a process's RSS).
"""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.config import LuminaConfig
from lumina.errors import LuminaInputError
from lumina.video_config import LuminaVideoConfig
from lumina.memory import (
    GiB,
    MemoryEstimate,
    available_memory,
    check_fits,
    check_sampling_fits,
    describe_request,
    estimate_sampling_memory,
    largest_square_side,
)

from lumina_support import profiled_peak

NEXT_2B = lumina.PRESETS["lumina-next-2b"]
FLAG_5B = lumina.PRESETS["lumina-t2i-5b"]
TINY = LuminaConfig("next_dit", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=32, multiple_of=16)


def estimate(config: LuminaConfig = NEXT_2B, side_px: int = 1024, batch: int = 1, **kwargs) -> MemoryEstimate:
    latent = side_px // config.vae_downsample
    kwargs.setdefault("device", "cpu")
    return estimate_sampling_memory(config, (batch, config.in_channels, latent, latent), **kwargs)


# -- structure -----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [NEXT_2B, FLAG_5B], ids=["next_dit", "flag_dit"])
def test_monotone_in_size_and_batch(config: LuminaConfig) -> None:
    sizes = [estimate(config, side).total for side in (256, 512, 1024, 2048, 4096)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    batches = [estimate(config, 1024, batch).total for batch in (1, 2, 4)]
    assert batches == sorted(batches) and len(set(batches)) == len(batches)


def test_cfg_doubles_the_batch_terms() -> None:
    # on a GPU: CPU inference runs the SwiGLU over row chunks of a fixed size, whatever the batch
    plain, guided = estimate(cfg_batch=False, device="cuda"), estimate(cfg_batch=True, device="cuda")
    assert guided.rows == 2 * plain.rows
    assert guided.phase == plain.phase == "ffn"
    assert guided.activations == 2 * plain.activations  # every activation term is per model row
    # one guided image and two unguided ones make the same model batch
    assert estimate(batch=2, cfg_batch=False, device="cuda").activations == guided.activations
    assert guided.weights == plain.weights and guided.rope == plain.rope  # shared: no batch axis


def test_weights_counted_only_when_not_resident() -> None:
    from_config = estimate(TINY, 128)
    params = sum(p.numel() for p in lumina.build_model(TINY).parameters())
    assert from_config.weights == 4 * params
    model = lumina.build_model(TINY)  # on the CPU already: free memory excludes it
    resident = estimate_sampling_memory(model, (1, 4, 16, 16), device="cpu")
    assert resident.weights == 0 and resident.run_bytes == from_config.run_bytes
    assert estimate_sampling_memory(model, (1, 4, 16, 16), count_weights=True).weights == 4 * params


def test_bf16_halves_weights_and_activations() -> None:
    fp32, bf16 = estimate(dtype=torch.float32), estimate(dtype=torch.bfloat16)
    assert bf16.weights * 2 == fp32.weights
    # RoPE and the RMSNorms still compute in fp32 (apply_rope's copies), hence "about" half
    assert 0.45 < bf16.activations / fp32.activations < 0.55


def test_math_path_counts_the_scores_and_fused_kernels_do_not() -> None:
    """A padded list batch gets a key mask; with the math kernel SDPA materialises B·H·Lq·Lk
    scores (2.25 × at its peak), which fused kernels never do."""
    items = [(4, 32, 32), (4, 32, 16)]  # 256 and 128 tokens: padded to 256, masked
    math = estimate_sampling_memory(TINY, items, cfg_batch=False, attention_backend="math", caption_tokens=8, device="cpu")
    scores = 2 * TINY.n_heads * 256 * 256 * 4
    assert math.phase == "self-attention" and math.backend == "sdpa_math"
    assert math.attention >= scores * 9 // 4
    bigger = estimate_sampling_memory(TINY, [(4, 64, 64), (4, 64, 32)], cfg_batch=False, attention_backend="math",
                                      caption_tokens=8, device="cpu")
    assert bigger.attention > 15 * math.attention  # 2× the side: 4× the tokens, 16× the scores
    fused = estimate_sampling_memory(TINY, items, cfg_batch=False, attention_backend="sdpa", caption_tokens=8, device="cpu")
    assert fused.attention < math.attention / 100 and fused.tensor_bytes < math.tensor_bytes / 2


def test_padded_list_keeps_rope_tables_per_row() -> None:
    same = estimate_sampling_memory(TINY, [(4, 32, 32), (4, 32, 32)], cfg_batch=False, device="cpu")
    padded = estimate_sampling_memory(TINY, [(4, 32, 32), (4, 32, 16)], cfg_batch=False, device="cpu")
    assert padded.rope == 2 * same.rope  # positions differ per item: (B, L, d/2) tables
    assert same.tokens == padded.tokens == 256


def test_solvers_that_keep_more_state_need_more() -> None:
    totals = [estimate(solver=s).latents for s in ("euler", "midpoint", "rk4", "dopri5")]
    assert totals == sorted(totals) and len(set(totals)) == 4


def test_unknown_inputs_are_refused() -> None:
    with pytest.raises(lumina.LuminaInputError, match="solver"):
        estimate(solver="lms")
    with pytest.raises(lumina.LuminaInputError, match="attention backend"):
        estimate(attention_backend="xformers")
    with pytest.raises(lumina.LuminaInputError, match="multiple"):
        estimate_sampling_memory(NEXT_2B, (1, 4, 15, 16))


# -- the largest size that fits --------------------------------------------------------------------
@pytest.mark.parametrize("budget_gib", [4, 12, 40])
def test_largest_square_side_fits_and_the_next_does_not(budget_gib: int) -> None:
    budget = budget_gib * GiB
    side = largest_square_side(NEXT_2B, budget, dtype=torch.bfloat16, device="cpu")
    unit = NEXT_2B.pixel_unit
    assert side > 0 and side % unit == 0
    assert estimate(side_px=side, dtype=torch.bfloat16).total <= budget
    assert estimate(side_px=side + unit, dtype=torch.bfloat16).total > budget


def test_largest_square_side_is_zero_when_nothing_fits() -> None:
    assert largest_square_side(NEXT_2B, 1 * GiB, device="cpu") == 0  # the fp32 weights alone are 6 GiB


# -- the refusal -----------------------------------------------------------------------------------
def test_check_fits_passes_when_it_fits() -> None:
    e = estimate(TINY, 128)
    check_fits(e, e.total, what="sampling")  # no error at exactly the estimate


def test_check_fits_message_names_size_memory_largest_side_and_options() -> None:
    e = estimate(NEXT_2B, 8192, batch=2, dtype=torch.float32)
    available = 16 * GiB
    with pytest.raises(lumina.LuminaInputError) as caught:
        check_fits(e, available, what=describe_request(NEXT_2B, (2, 4, 1024, 1024)))
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith("sampling 2 images of 8192×8192 px needs about ")
    assert f"{e.total / GiB:.1f} GiB" in message and "only 16.0 GiB is free on cpu" in message
    side = _largest_side_at(e, available)
    assert side > 0 and f"The largest square image that fits is {side}×{side} px" in message
    assert "fewer images per batch (one at a time fits up to" in message
    assert "bf16 weights" in message and "a GPU" in message
    assert "tiled sampling and Context Drop" in message and "not yet available" in message


def _largest_side_at(e: MemoryEstimate, budget: int) -> int:
    return largest_square_side(NEXT_2B, budget, batch=2, dtype=torch.float32, device="cpu")


def test_check_fits_when_nothing_fits_says_so() -> None:
    e = estimate(NEXT_2B, 1024)
    with pytest.raises(lumina.LuminaInputError, match=r"Not even a 16×16 px image fits"):
        check_fits(e, GiB, what="sampling 1 image of 1024×1024 px")


def test_check_sampling_fits_uses_the_free_memory_of_the_model_device() -> None:
    model = lumina.build_model(TINY)
    e = check_sampling_fits(model, (1, 4, 16, 16), caption_tokens=8)
    assert e.total < available_memory("cpu")
    with pytest.raises(lumina.LuminaInputError, match="sampling 1 image of 1048576×1048576 px"):
        check_sampling_fits(model, (1, 4, 131072, 131072), caption_tokens=8)


def test_available_memory_is_positive_and_bounded() -> None:
    import psutil

    free = available_memory("cpu")
    assert 0 < free <= psutil.virtual_memory().total


# -- against a real forward --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family,dim,heads,kv_heads,dtype,ffn_hidden,phase",
    [
        ("next_dit", 128, 4, 2, torch.float32, None, "ffn"),
        ("flag_dit", 128, 4, 4, torch.float32, None, "ffn"),
        # CPU inference runs a large SwiGLU over row chunks (lumina.model.layers.CPU_FFN_CHUNK_BYTES,
        # lowered here to "N rows" in the ffn_hidden slot): the intermediates are a chunk's, the
        # outputs are concatenated; small chunks move the peak out of the FFN
        ("next_dit", 128, 4, 2, torch.float32, "1500 rows", "ffn"),
        ("next_dit", 128, 4, 2, torch.float32, "300 rows", "cross-attention"),
        ("flag_dit", 128, 4, 4, torch.bfloat16, "300 rows", "self-attention"),
        # a narrow FFN moves the peak into attention: the GQA fold copies, the gated sum of the
        # two attention outputs, for bf16 on the CPU the kernel's repacked K and V, and apply_rope's
        # fp32 copies of K beside both versions of Q
        ("next_dit", 128, 4, 2, torch.float32, 32, "cross-attention"),
        ("flag_dit", 128, 4, 4, torch.float32, 32, "gate"),
        ("flag_dit", 128, 4, 4, torch.bfloat16, None, "self-attention"),
        ("next_dit", 256, 8, 8, torch.bfloat16, 32, "rope k"),
    ],
)
def test_forward_estimate_matches_torch_allocations(
    family: str, dim: int, heads: int, kv_heads: int, dtype: torch.dtype, ffn_hidden: int | str | None, phase: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One CFG forward (prompt and negative prompt of different lengths, so a masked
    cross-attention) of a small model: the estimate's forward part within 5 % of the peak torch
    allocated (the tensors the estimate leaves out, a few kB, and per-thread kernel buffers)."""
    from lumina.model import layers

    chunk_rows = int(ffn_hidden.split()[0]) if isinstance(ffn_hidden, str) else None
    config = LuminaConfig(family, dim=dim, n_layers=3, n_heads=heads, n_kv_heads=kv_heads, cap_feat_dim=256,
                          multiple_of=32, ffn_hidden=None if chunk_rows else ffn_hidden)
    if chunk_rows:
        element = torch.empty(0, dtype=dtype).element_size()
        monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", chunk_rows * config.hidden_dim * element)
    torch.manual_seed(0)
    model = lumina.build_model(config).to(dtype).eval()
    x = torch.randn(2, 4, 64, 64)
    feats = torch.randn(2, 24, 256)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 12:] = False
    with torch.inference_mode():
        model(x[:, :, :8, :8], torch.rand(2), feats, mask)  # warm-up
        measured = profiled_peak(lambda: model(x, torch.rand(2), feats, mask))
    e = estimate_sampling_memory(model, (1, 4, 64, 64), cfg_batch=True, caption_tokens=24, device="cpu")
    forward = e.activations + e.attention + e.rope
    assert e.phase == phase
    assert abs(forward / measured - 1) < 0.05, (forward, measured, e.phase)


@pytest.mark.parametrize(
    "dim,heads,kv_heads,dtype,ffn_hidden,phase",
    [
        (128, 4, 2, torch.float32, None, "ffn"),
        (128, 4, 2, torch.float32, 32, "cross-attention"),
        (256, 8, 8, torch.bfloat16, 32, "rope k"),
    ],
)
def test_lumina_video_forward_estimate_matches_torch_allocations(
    dim: int, heads: int, kv_heads: int, dtype: torch.dtype, ffn_hidden: int | None, phase: str
) -> None:
    """Lumina-Video at its finest patch entry (1x2, 4 latent frames), CFG rows with captions of
    different lengths: the estimate's forward part within 5 % of the peak torch allocated."""
    config = LuminaVideoConfig(dim=dim, n_layers=3, n_heads=heads, n_kv_heads=kv_heads, cap_feat_dim=256, multiple_of=32,
                               ffn_hidden=ffn_hidden, patches=((2, 1), (2, 2), (4, 2)), in_channels=16)
    torch.manual_seed(0)
    model = lumina.LuminaVideo(config).to(dtype).eval()
    x = torch.randn(2, 16, 4, 32, 32)
    feats = torch.randn(2, 24, 256)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 12:] = False
    motion = torch.tensor([6.0, 2.0])
    with torch.inference_mode():
        model(x[..., :8, :8], torch.rand(2), feats, mask, motion, 2, 1)  # warm-up
        measured = profiled_peak(lambda: model(x, torch.rand(2), feats, mask, motion, 2, 1))
    e = estimate_sampling_memory(model, (1, 16, 4, 32, 32), cfg_batch=True, caption_tokens=24, device="cpu")
    forward = e.activations + e.attention + e.rope
    assert e.tokens == 4 * 16 * 16 and e.phase == phase
    assert abs(forward / measured - 1) < 0.05, (forward, measured, e.phase)


def test_lumina_video_refuses_what_cannot_fit_naming_frames() -> None:
    config = LuminaVideoConfig(dim=64, n_layers=2, n_heads=4, cap_feat_dim=16, patches=((2, 1), (2, 2)), in_channels=16)
    model = lumina.LuminaVideo(config)
    with pytest.raises(LuminaInputError, match=r"sampling 1 latent of 800 frames at 1600×1600 px needs about .* fewer frames"):
        check_sampling_fits(model, (1, 16, 800, 200, 200))
