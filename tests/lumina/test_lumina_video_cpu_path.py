"""Lumina-Video's CPU inference path (`VideoBlock`: token chunks, per-item attention) against the
shared Next-DiT block it stands in for, on the lumina_video_tiny golden weights: the goldens pin one
chunk per item, these pin many chunks, padded lists, padded captions and the cases that must
fall back to the shared block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumina.config import infer_config
from lumina.model import build_model
from lumina.model import lumina_video as lv

ROOT = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_video_tiny"


@pytest.fixture(scope="module")
def vmodel() -> lv.LuminaVideo:
    model = build_model(infer_config(load_file(str(ROOT / "model.safetensors"))))
    model.load_state_dict(load_file(str(ROOT / "model.safetensors")), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(ROOT / "tensors.safetensors"))


def _both(model, *args):
    """(CPU path under no_grad, shared block under autograd) outputs of one call."""
    with torch.no_grad():
        fast = model(*args)
    with torch.enable_grad():
        shared = model(*args)
    if isinstance(fast, torch.Tensor):
        return [fast], [shared.detach()]
    return fast, [s.detach() for s in shared]


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("chunk_elements", [lv.CHUNK_ELEMENTS, 16 * 256])  # one chunk per item / 16-token chunks
@pytest.mark.parametrize("entry", [(2, 1), (2, 2), (4, 2)])
def test_cpu_path_matches_the_shared_block(vmodel, tensors, monkeypatch, chunk_elements, entry):
    monkeypatch.setattr(lv, "CHUNK_ELEMENTS", chunk_elements)
    p, f = entry
    T = tensors
    fast, shared = _both(vmodel, T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"], p, f)
    assert _max_diff(fast, shared) <= 1e-5
    xs = [T["in.list_x0"], T["in.list_x1"], T["in.list_x2"]]  # three sizes: padded to the longest
    fast, shared = _both(vmodel, xs, T["in.list_t"], T["in.list_cap_feats"], T["in.list_cap_mask"], T["in.list_motion_score"], p, f)
    assert [o.shape for o in fast] == [x.shape for x in xs]
    assert _max_diff(fast, shared) <= 1e-5


def test_token_chunks_cover_every_token_evenly():
    for length in (1, 15, 16, 683, 3072):
        for width in (64, 1536, 1 << 30):
            chunks = lv.token_chunks(length, width)
            assert chunks[0][0] == 0 and chunks[-1][1] == length
            assert all(e0 == s1 for (_, e0), (s1, _) in zip(chunks, chunks[1:]))
            sizes = [e - s for s, e in chunks]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= min(length, 16) // 2


def test_module_hooks_and_features_take_the_shared_block(vmodel, tensors, monkeypatch):
    """A forward hook on a block's feed-forward sees the whole sequence once per call (not one call
    per chunk), so hooked modules run the shared block."""
    monkeypatch.setattr(lv, "CHUNK_ELEMENTS", 16 * 256)
    T = tensors
    seen = []
    handle = vmodel.layers[0].feed_forward.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            vmodel(T["in.x"], T["in.t"], T["in.cap_feats"], T["in.cap_mask"], T["in.motion_score"], 2, 1)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0][:2] == (2, 4 * 10 * 14)


def test_rope_tables_are_cached_per_grid_and_dropped_on_moves(tensors):
    model = build_model(infer_config(load_file(str(ROOT / "model.safetensors"))))
    model.load_state_dict(load_file(str(ROOT / "model.safetensors")))
    model.eval()
    table = model._rotations((2, 3, 4), torch.device("cpu"))
    assert model._rotations((2, 3, 4), torch.device("cpu")) is table
    assert torch.equal(table, lv.video_rope_grid(2, 3, 4, model.config.head_dim, model.config.rope_theta).reshape(24, -1))
    model.float()  # any .to() / dtype change clears the cache
    assert model._rotations((2, 3, 4), torch.device("cpu")) is not table
    for n in range(model.ROPE_CACHE_SIZE + 3):
        model._rotations((1, 1, n + 1), torch.device("cpu"))
    assert len(model._rope_cache) == model.ROPE_CACHE_SIZE
