"""The training cache with frames (train/cache.py): clips cached as (3, F, H, W) pixels or (C, F, h, w)
latents under their own keys, training from it equals training from the clips, and the CogVideoX VAE
(a tiny random AutoencoderKLCogVideoX) encodes 4k + 1 frames into k + 1 latent frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import FRAMES_TINY, moving_frames, write_frame_folder, write_video
from safetensors import safe_open
from safetensors.torch import load_file

from train.cache import CachedItems, build_cache
from train.config import ConfigError, load_config
from train.data import build_dataset
from train.engine import fit

COLOURS = ("red", "green", "blue", "yellow")
WEIGHTS = ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors")


def clips(root: Path, count: int = 8, frames: int = 6, size: tuple[int, int] = (32, 32)) -> Path:
    """Half videos, half frame folders, all captioned (with words the tiny text encoder knows)."""
    for i in range(count):
        caption = f"a {COLOURS[i % 4]} {'small' if i < 4 else 'large'} square"
        array = moving_frames(frames, *size, seed=i)
        if i % 2:
            write_frame_folder(root / f"clip{i}", array, caption=caption)
        else:
            write_video(root / f"clip{i}.mp4", array)
            (root / f"clip{i}.txt").write_text(caption)
    return root


def fit_for(args: list[str], out: Path, steps: int) -> Path:
    return fit(load_config(None, [*args, f"run.out_dir={out}", f"optim.steps={steps}", f"run.save_every={steps}"]))


def test_a_pixel_clip_cache_trains_exactly_like_the_clips(tmp_path, encoder):
    root = clips(tmp_path / "data")
    args = [*FRAMES_TINY, "model.n_kv_heads=1", "data.kind=folder", f"data.path={root}", "data.bucket_top_k=1",
            "optim.batch_size=4", f"text.encoder={encoder}"]
    cache = build_cache(load_config(None, [*args, f"data.cache_dir={tmp_path / 'cache'}"]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert [(item["frames"], *item["crop"]) for item in manifest["items"]] == [(4, 16, 16)] * 8
    assert manifest["match"]["data.frames"] == 4
    with safe_open(str(cache / manifest["shards"][0]), framework="pt") as f:
        keys = set(f.keys())
    assert {f"clip.{k}.pixels" for k in range(8)} <= keys and not any(k.split(".")[0].isdigit() for k in keys)
    online = fit_for(args, tmp_path / "online", 2)  # one epoch: the crops and clip starts the cache froze
    cached = fit_for([*args, f"data.cache_dir={cache}"], tmp_path / "cached", 2)
    for name in WEIGHTS:
        a, b = load_file(online / "checkpoints" / "latest" / name), load_file(cached / "checkpoints" / "latest" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_an_image_cache_is_not_taken_for_clips(tmp_path, encoder):
    root = clips(tmp_path / "data")
    args = [*FRAMES_TINY, "model.n_kv_heads=1", "data.kind=folder", f"data.path={root}", f"text.encoder={encoder}",
            f"data.cache_dir={tmp_path / 'cache'}"]
    build_cache(load_config(None, args))
    with pytest.raises(ConfigError, match=r"was built with data.frames=4 but the config has 5: set data.frames=4"):
        CachedItems.open(load_config(None, [*args, "data.frames=5"]))


@pytest.fixture(scope="module")
def cogvideox(tmp_path_factory) -> Path:
    """A tiny random CogVideoX VAE: 8× spatial, 4× temporal, 4 latent channels (as tests/lumina builds it)."""
    from diffusers import AutoencoderKLCogVideoX

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                     down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
                                     temporal_compression_ratio=4, sample_height=96, sample_width=80)
    folder = tmp_path_factory.mktemp("cogvideox") / "vae"
    vae.save_pretrained(folder)
    return folder


def video_args(root: Path, vae: Path, encoder: str) -> list[str]:
    # 32 px frames → 4×4 latents, patch 2: 2×2 tokens a latent frame; 5 frames → 2 latent frames
    return [*FRAMES_TINY, "model.n_kv_heads=1", "model.in_channels=4", "model.vae_downsample=8", "model.patch_size=2",
            "model.base_image_size=32", "data.image_size=32", "data.frames=5", "data.kind=folder", f"data.path={root}",
            f"data.vae={vae}", "optim.batch_size=2", f"text.encoder={encoder}"]


def test_the_cogvideox_vae_takes_4k_plus_1_frames(tmp_path, encoder, cogvideox):
    root = clips(tmp_path / "data", count=2)
    with pytest.raises(ConfigError) as info:
        load_config(None, [*video_args(root, cogvideox, encoder), "data.frames=4"])
    assert str(info.value) == (f"data.frames=4: the CogVideoX VAE at data.vae={str(cogvideox)!r} takes 4k + 1 frames; "
                               "set data.frames=1 or 5")


def test_a_cogvideox_cache_holds_k_plus_1_latent_frames_and_trains_without_the_vae(tmp_path, encoder, cogvideox, monkeypatch):
    from lumina.video_vae import load_video_vae

    root = clips(tmp_path / "data", count=4, frames=6)
    args = [*video_args(root, cogvideox, encoder), "data.bucket_top_k=1"]
    cache = build_cache(load_config(None, [*args, f"data.cache_dir={tmp_path / 'cache'}"]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["latent"] == {"space": "vae", "channels": 4, "downsample": 8, "scale": 1.15258426, "shift": 0.0,
                                  "temporal": 4, "exact": True}
    cached = CachedItems.open(load_config(None, [*args, f"data.cache_dir={cache}"]))
    dist, caption = cached[0]
    assert dist.mean.shape == (4, 2, 4, 4) and dist.std is None and caption == "a red small square"  # 5 frames → 2 latent frames
    clip, _ = build_dataset(load_config(None, args)).load(0, epoch=0)  # the frames the cache encoded
    torch.testing.assert_close(dist.mean, load_video_vae(cogvideox, dtype=torch.float32).encode(clip[None])[0])

    online = fit_for(args, tmp_path / "online", 2)  # the VAE encodes each step's clips
    assert all(torch.isfinite(torch.tensor(json.loads(line)["loss"])) for line in (online / "log.jsonl").read_text().splitlines())

    import train.latents

    def forbidden(*args, **kwargs):
        raise AssertionError("training from a cache must not load the VAE")

    monkeypatch.setattr(train.latents.VideoVAESpace, "__init__", forbidden)
    out = fit_for([*args, f"data.cache_dir={cache}"], tmp_path / "cached", 2)
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
