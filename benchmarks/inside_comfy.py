"""Run inside the ComfyUI driver process by benchmarks/node_overhead.py (`call_in_comfy`): the
library path timed in the same process, threads and torch build as the node path."""

from __future__ import annotations

import sys
import time

_CACHE: dict = {}


def library_sample(ckpt: str, encoder: str, prompt: str, negative: str, seed: int, steps: int, side: int) -> float:
    """Seconds of one `lumina.sample` call with the Flow Sampler node's settings (model and captions cached)."""
    import torch

    pack = sys.modules["comfyui_lumina_t2x"]
    lumina = pack.lumina
    if "model" not in _CACHE:
        from comfyui_lumina_t2x.lumina.checkpoints import load_model
        from comfyui_lumina_t2x.lumina.text_encoders import load_text_encoder

        _CACHE["model"] = load_model(ckpt, dtype=torch.float32)
        both = load_text_encoder(encoder, dtype=torch.float32).encode([prompt, negative])
        _CACHE["cond"] = lumina.conditioning.Conditioning(both.cap_feats[:1], both.cap_mask[:1])
        _CACHE["uncond"] = lumina.conditioning.Conditioning(both.cap_feats[1:], both.cap_mask[1:])
    model = _CACHE["model"]
    options = lumina.extrapolation.extrapolation_options(model.config, side, side, "auto")
    start = time.perf_counter()
    lumina.sampling.sample(model, _CACHE["cond"], _CACHE["uncond"], (1, 4, side // 8, side // 8), seed=seed, steps=steps,
                           step_convention="model_steps", solver="euler", shift=4.0, cfg=4.0, options=options)
    return time.perf_counter() - start
