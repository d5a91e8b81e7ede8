"""What the training tests build: the tiny model config, image folders and a tiny VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# a tiny pixel-space Next-DiT on 16-px shapes that trains a step in milliseconds
TINY = [
    "model.dim=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.patch_size=4",
    "model.multiple_of=16", "model.base_image_size=16", "data.image_size=16", "data.repeats=1",
    "optim.batch_size=8", "optim.lr=2e-3", "optim.warmup_steps=0", "run.log_every=1", "run.ema_decay=0.9",
]

WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "small", "large")


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """Random RGB PNGs of the given (width, height) with same-name .txt captions."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(" ".join(["a", *rng.choice(WORDS, 3)]))
    return folder


def write_vae(folder: Path, seed: int = 0, **config) -> Path:
    """A tiny random diffusers AutoencoderKL: 2 down blocks (downsampling 2), 4 latent channels."""
    from diffusers import AutoencoderKL

    args = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "block_out_channels": (8, 16), "latent_channels": 4,
            "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 16, "scaling_factor": 0.13025}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**{**args, **config})
    vae.save_pretrained(folder)
    return folder
