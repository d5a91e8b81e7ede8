"""Lumina-Video's RoPE rotations are cached per token grid (and dropped when the model moves)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from lumina.config import infer_config
from lumina.model import build_model
from lumina.model import lumina_video as lv

ROOT = Path(__file__).parents[1] / "fixtures" / "golden" / "lumina_video_tiny"


def test_rope_tables_are_cached_per_grid_and_dropped_on_moves():
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
