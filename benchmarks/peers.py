"""diffusers' Lumina pipeline as the peer of `lumina.sample`: the same weights (saved as a diffusers
folder), prompt embeddings, starting latent and time grid, latent output. Shared by the benchmarks
that compare whole sampling runs."""

from __future__ import annotations

import tempfile
from typing import Callable

import torch

import lumina
import lumina.flow


def diffusers_sampler(model: lumina.LuminaDiT, side: int, dtype: torch.dtype, device: str | torch.device) -> Callable:
    """run(cap, mask, neg, neg_mask, latent, steps, cfg) → diffusers' final latent for our `model`,
    Euler over the uniform grid of `steps` model steps (give ours the same grid), official CFG
    (channels 0–2 guided; LuminaPipeline's rule), no resolution extrapolation."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline

    with tempfile.TemporaryDirectory() as tmp:
        lumina.save_diffusers(model, tmp)
        transformer = LuminaNextDiT2DModel.from_pretrained(tmp, torch_dtype=dtype).to(device).eval()
    pipe = LuminaPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.default_image_size = side * 8  # diffusers scales RoPE by size / default size: keep it at 1

    def run(cap, mask, neg, neg_mask, latent, steps: int, cfg: float) -> torch.Tensor:
        grid = lumina.flow.time_grid(steps, "uniform", convention="model_steps")
        return pipe(
            prompt_embeds=cap.to(device, dtype), prompt_attention_mask=mask.to(device),
            negative_prompt_embeds=neg.to(device, dtype), negative_prompt_attention_mask=neg_mask.to(device),
            latents=latent.to(device, dtype), height=side * 8, width=side * 8, num_inference_steps=steps,
            guidance_scale=cfg, output_type="latent", scaling_watershed=1.0, proportional_attn=False,
            sigmas=[float(lumina.flow.sigma_from_t(t)) for t in grid[:-1]],
        ).images

    return run
