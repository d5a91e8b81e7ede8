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


# -- clips -------------------------------------------------------------------------------------
# a tiny frames model: head_dim 24 takes Next-DiT's 3-D RoPE (divisible by 6); 4 frames of 16 px
# at patch 4 are 64 tokens
FRAMES_TINY = [
    "model.dim=48", "model.n_layers=2", "model.n_heads=2", "model.patch_size=4", "model.multiple_of=16",
    "model.base_image_size=16", "data.image_size=16", "data.repeats=1", "data.frames=4",
    "optim.batch_size=8", "optim.lr=2e-3", "optim.warmup_steps=0", "run.log_every=1", "run.ema_decay=0.9",
    "run.progress=false",
]


def moving_frames(count: int, width: int = 32, height: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (count, height, width, 3): a bright square stepping right over a dark noisy background,
    frame i also carrying i in its mean brightness (so tests can tell frames apart after decoding)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 40, (count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        out[i] += np.uint8(6 * i)
        x = (i * 3) % max(1, width - 8)
        out[i, height // 2 - 4 : height // 2 + 4, x : x + 8] = (230, 200, 40)
    return out


def write_video(path: Path, frames: np.ndarray, fps: int = 8, codec: str | None = None, gop: int | None = None) -> Path:
    """Encode uint8 (F, H, W, 3) frames with PyAV: H.264 in .mp4, VP9 in .webm (lossy either way);
    `gop`: a keyframe every that many frames (seekable points)."""
    import av

    codec = codec or {".mp4": "libx264", ".webm": "libvpx-vp9"}[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, frames: np.ndarray, caption: str | None = None) -> Path:
    """PNG frames frame_000.png, ... in `folder`, with `folder`.txt beside it when a caption is given."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(frames):
        Image.fromarray(array).save(folder / f"frame_{i:03d}.png")
    if caption is not None:
        (folder.parent / f"{folder.name}.txt").write_text(caption)
    return folder
