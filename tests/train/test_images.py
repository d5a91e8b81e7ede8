"""Aspect-ratio buckets (train/images.py), the VAE latent space (train/latents.py), and training on
a folder of mixed-aspect images in pixel space and through a tiny SDXL-style VAE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import write_images, write_vae
from safetensors.torch import load_file

import lumina
from train.config import ConfigError, load_config
from train.data import build_dataset
from train.engine import fit
from train.images import (
    CaptionedImages,
    best_sizes,
    bucket_crop,
    bucket_sizes,
    choose_size,
    item_rng,
    resize_and_crop,
)

PIXEL = [  # a tiny pixel-space Next-DiT on a folder: unit 4 px, budget (16/4)² = 16 tokens
    "model.dim=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.patch_size=4",
    "model.multiple_of=16", "model.base_image_size=16", "data.image_size=16", "data.kind=folder",
    "optim.batch_size=4", "optim.lr=2e-3", "optim.warmup_steps=0", "run.log_every=1", "run.ema_decay=0.9",
]
LATENT = [  # the same through a VAE that halves the sides into 4 channels: unit 2 × 2 = 4 px
    *PIXEL, "model.patch_size=2", "model.in_channels=4", "model.vae_downsample=2",
]
MIXED = [(40, 24), (24, 40), (16, 16), (64, 16), (33, 17), (20, 30), (100, 60), (12, 48)]


# -- buckets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("image_size, unit, ratio", [(16, 4, 4.0), (1024, 16, 4.0), (256, 16, 2.0), (512, 32, 3.0)])
def test_buckets_hold_the_budget_in_unit_multiples_within_the_ratio(image_size, unit, ratio):
    sizes = bucket_sizes(image_size, unit, ratio)
    budget = (image_size // unit) ** 2
    assert (image_size, image_size) in sizes
    for w, h in sizes:
        assert w % unit == 0 and h % unit == 0
        assert (w // unit) * (h // unit) <= budget
        assert max(w, h) / min(w, h) <= ratio


def test_buckets_follow_the_model_unit(tmp_path, encoder):
    folder = write_images(tmp_path / "data", MIXED)
    config = load_config(None, [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", "data.image_size=32",
                                "model.patch_size=8"])
    assert build_dataset(config).sizes == bucket_sizes(32, 8, 4.0)


def test_top1_with_an_exactly_matching_image_gives_that_size():
    from PIL import Image

    sizes = bucket_sizes(64, 8, 4.0)
    rng = np.random.default_rng(0)
    for w, h in sizes:
        for scale in (1, 3):  # the same shape, bigger: the same bucket
            assert choose_size(w * scale, h * scale, sizes, 1, rng) == (w, h)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = bucket_crop(Image.fromarray(pixels), sizes, 1, rng)
        assert np.array_equal(np.asarray(out), pixels)  # no resampling, no offset
    assert best_sizes(30, 10, sizes, 4)[0] == (96, 32)  # 3:1 → the 3:1 bucket first


def test_crops_are_deterministic_and_vary_across_epochs(tmp_path):
    folder = write_images(tmp_path, [(60, 37)])
    sizes = bucket_sizes(32, 4, 4.0)
    data = CaptionedImages([(folder / "img000.png", "x")], 32, sizes, top_k=4, seed=7)
    for epoch in range(3):
        assert torch.equal(data.item(0, epoch)[0], data.item(0, epoch)[0])
    crops = [data.item(0, epoch)[0] for epoch in range(12)]
    shapes = {tuple(c.shape[1:]) for c in crops}
    assert len(shapes) > 1 and all((w, h) in best_sizes(60, 37, sizes, 4) for h, w in shapes)
    assert len({c.sum().item() for c in crops}) > len(shapes)  # the offsets vary too
    reseeded = CaptionedImages(data.items, 32, sizes, top_k=4, seed=8)
    assert [c.sum().item() for c in crops] != [reseeded.item(0, e)[0].sum().item() for e in range(12)]
    for c in crops:
        assert c.dtype == torch.float32 and -1.0 <= c.min() and c.max() <= 1.0


def test_a_big_image_is_box_halved_before_the_bicubic_resize(monkeypatch):
    from PIL import Image

    calls = []
    original = Image.Image.resize

    def spy(self, size, resample=None, *args, **kwargs):
        calls.append((self.size, tuple(size), resample))
        return original(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    gradient = np.broadcast_to(np.linspace(0, 255, 300, dtype=np.float32)[None, :, None], (130, 300, 3))
    out = resize_and_crop(Image.fromarray(gradient.astype(np.uint8)), (32, 16), np.random.default_rng(0))
    assert out.size == (32, 16)
    assert [c[2] for c in calls] == [Image.BOX, Image.BOX, Image.BOX, Image.BICUBIC]
    assert [c[1] for c in calls[:3]] == [(150, 65), (75, 32), (37, 16)]  # halved while ≥ 2× the crop
    assert calls[3][1] == (37, 16)  # then resized to cover 32 × 16 (here it already does)
    row = np.asarray(out, dtype=np.float32)[8, :, 0]
    assert np.all(np.diff(row) >= -1)  # still the left-to-right ramp


def test_square_mode_keeps_the_center_crop(tmp_path, encoder):
    folder = write_images(tmp_path / "data", MIXED)
    config = load_config(None, [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", "data.buckets=false"])
    data = build_dataset(config)
    assert data.sizes is None and {tuple(data[i][0].shape) for i in range(len(data))} == {(3, 16, 16)}


# -- the VAE latent space ---------------------------------------------------------------------
def test_vae_latents_use_the_official_scale(tmp_path, vae):
    from diffusers import AutoencoderKL

    from train.config import SDXL_SCALE, vae_geometry
    from train.latents import VAESpace

    assert vae_geometry(vae) == (4, 2, 0.13025, 0.0)
    space = VAESpace(vae)
    images = [torch.rand(3, 16, 24) * 2 - 1, torch.rand(3, 24, 16) * 2 - 1, torch.rand(3, 16, 24) * 2 - 1]
    dists = space.encode(images)
    reference = AutoencoderKL.from_pretrained(vae, local_files_only=True)
    for image, dist in zip(images, dists):
        with torch.no_grad():
            ref = reference.encode(image[None]).latent_dist
        assert dist.mean.shape == (4, image.shape[1] // 2, image.shape[2] // 2)
        torch.testing.assert_close(dist.mean, ref.mean[0] * 0.13025, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(dist.std, ref.std[0] * 0.13025, atol=1e-6, rtol=1e-5)

    other = write_vae(tmp_path / "sd3like", scaling_factor=1.5305, shift_factor=0.0609)
    assert vae_geometry(other)[2:] == (1.5305, 0.0609)
    config = json.loads((other / "config.json").read_text())
    for key in ("scaling_factor", "shift_factor"):
        config.pop(key)
    (other / "config.json").write_text(json.dumps(config))
    assert vae_geometry(other)[2:] == (SDXL_SCALE, 0.0)  # absent: the SDXL VAE's


def test_vae_training_on_mixed_aspect_folder(tmp_path, encoder, vae):
    folder = write_images(tmp_path / "data", MIXED)
    config = load_config(None, [*LATENT, f"text.encoder={encoder}", f"data.path={folder}", f"data.vae={vae}",
                                f"run.out_dir={tmp_path / 'run'}", "optim.steps=3", "run.save_every=3"])
    out = fit(config)
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    model = lumina.load_model(out / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    assert model.config.in_channels == 4 and model.config.vae_downsample == 2


def test_bucketed_pixel_training_resumes_bit_identically(tmp_path, encoder):
    folder = write_images(tmp_path / "data", MIXED)
    base = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}"]  # 2 steps per epoch: 3 epochs

    def run(name: str, steps: int) -> Path:
        return fit(load_config(None, [*base, f"run.out_dir={tmp_path / name}", f"optim.steps={steps}", f"run.save_every={steps}"]))

    straight = run("straight", 6)
    run("resumed", 3)
    resumed = run("resumed", 6)
    a = load_file(straight / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    b = load_file(resumed / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- configs that cannot run ------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["model.vae_downsample=8", "model.in_channels=4", "data.image_size=64"], "data.vae is not set but model.vae_downsample=8"),
    (["model.vae_downsample=8", "model.in_channels=4", "data.image_size=64", "data.vae=/nonexistent/vae"],
     "data.vae='/nonexistent/vae' is not a folder"),
    (["data.vae={vae}"], "model.vae_downsample=1 trains in pixel space"),
    (["model.in_channels=4"], "model.in_channels=4 but pixel-space images"),
    ([*LATENT[-3:], "model.in_channels=16", "data.vae={vae}"], "makes 4-channel latents but model.in_channels=16"),
    ([*LATENT[-3:], "model.vae_downsample=8", "data.image_size=32", "data.vae={vae}"], "downsamples by 2 but model.vae_downsample=8"),
    (["data.bucket_top_k=0"], "data.bucket_top_k=0 must be at least 1"),
    (["data.max_aspect_ratio=0.5"], "data.max_aspect_ratio=0.5 must be at least 1"),
    (["data.kind=shapes", "data.cache_dir=cache"], "data.cache_dir is for folder/jsonl data"),
])
def test_bad_data_configs_fail_in_load_config(tmp_path, encoder, vae, overrides, message):
    folder = write_images(tmp_path / "data", MIXED[:1])
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", *(o.format(vae=vae) for o in overrides)]
    with pytest.raises(ConfigError) as info:
        load_config(None, args)
    assert message in str(info.value)


def test_the_empty_vae_folder_is_named(tmp_path, encoder):
    (tmp_path / "empty").mkdir()
    folder = write_images(tmp_path / "data", MIXED[:1])
    with pytest.raises(ConfigError, match="data.vae=.*has no readable AutoencoderKL config.json"):
        load_config(None, [*LATENT, f"text.encoder={encoder}", f"data.path={folder}", f"data.vae={tmp_path / 'empty'}"])


def test_item_rng_depends_on_seed_epoch_and_index():
    draws = {(s, e, i): item_rng(s, e, i).integers(1 << 30) for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(set(draws.values())) == len(draws)
    assert item_rng(3, 2, 1).integers(1 << 30) == item_rng(3, 2, 1).integers(1 << 30)


def test_two_processes_agree_with_one_on_mixed_sizes(tmp_path, encoder):
    """gloo DDP through `accelerate launch`: per-item noise seeds drawn for the global batch."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    folder = write_images(tmp_path / "data", MIXED)
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", "optim.steps=4", "run.save_every=4"]
    single = fit(load_config(None, [*args, f"run.out_dir={tmp_path / 'single'}"]))
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    # torchrun: `accelerate launch --cpu --num_processes 2` would start one process only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train", "fit",
           *args, f"run.out_dir={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training on 2 processes on cpu (DDP, MULTI_CPU), this is rank 1" in done.stderr
    a = load_file(single / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    b = load_file(tmp_path / "ddp" / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, f"2-process weights differ from 1-process by {worst:.2e}"
