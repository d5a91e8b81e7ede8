"""Helpers the library tests import by name (a module of its own: several test folders have a
`conftest`, so `from conftest import ...` would depend on which one pytest loaded last)."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.families import FAMILY_NAMES


def tiny_random_model(family: str, *, n_layers: int = 2, seed: int = 0, dim: int = 64, **changes) -> lumina.LuminaDiT:
    """A small fp32 model in eval mode with every parameter drawn from N(0, 0.2) under `seed`,
    so the zero-initialised gates are open and every path changes the output."""
    extra = {"n_kv_heads": 2} if family == "next_dit" else {}
    extra.update(changes)
    config = lumina.LuminaConfig(family, dim=dim, n_layers=n_layers, n_heads=4, cap_feat_dim=16, multiple_of=16, **extra)
    model = lumina.build_model(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def with_image_start(kwargs: dict) -> dict:
    """Sampling kwargs with `x_start`, `start_time`, `strength`, `normalize_start` folded into
    `start=lumina.ImageStart(...)` (building it may raise, as sample would)."""
    kwargs = dict(kwargs)
    names = {"x_start": "latent", "start_time": "start_time", "strength": "strength", "normalize_start": "normalize"}
    given = {names[k]: kwargs.pop(k) for k in list(kwargs) if k in names}
    if given:
        kwargs["start"] = lumina.ImageStart(**given)
    return kwargs


def load_error(source, **kwargs) -> str:
    """The message of the LuminaCheckpointError that loading `source` must raise."""
    with pytest.raises(lumina.LuminaCheckpointError) as info:
        lumina.load_model(source, **kwargs)
    return str(info.value)


def assert_checkpoint_message(msg: str, *parts: str, family: str | None, fix: bool = False) -> None:
    """Every part is in the message, which names the family guessed (and, with `fix`, a fix)."""
    for part in parts:
        assert part in msg, f"{part!r} not in: {msg}"
    label = FAMILY_NAMES[family] if family else "none"
    assert f"Model family guessed: {label}." in msg, msg
    if fix:
        assert "Fix: " in msg, msg


def profiled_peak(fn) -> int:
    """Peak bytes torch allocated during fn() above the start, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [ev for ev in prof.profiler.kineto_results.events() if ev.name() == "[memory]"]
        deltas = [(ev.start_ns(), ev.nbytes()) for ev in events]
    except AttributeError:  # the profiler's raw event API moved: nothing to compare with
        pytest.skip("this torch's profiler does not expose raw memory events")
    level = peak = 0
    for _, delta in sorted(deltas):
        level += delta
        peak = max(peak, level)
    return peak
