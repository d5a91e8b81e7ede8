"""The on-disk training cache (train/cache.py): training from it equals training from the images,
it needs neither the VAE nor the text encoder's forward, and a cache built for other settings is a
clear error."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from builders import write_images
from safetensors.torch import load_file
from test_images import LATENT, PIXEL

from train.cache import CachedItems, build_cache
from train.config import ConfigError, load_config
from train.engine import fit

EXACT = [(16, 16), (20, 12), (12, 20), (32, 8), (16, 12), (8, 24), (12, 16), (24, 8)]  # buckets of 16 tokens × 4 px
WEIGHTS = ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors")


def weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(out / "checkpoints" / "latest" / name) for name in WEIGHTS}


def worst_difference(a: dict, b: dict) -> float:
    return max((a[n][k] - b[n][k]).abs().max().item() for n in a for k in a[n])


def fit_for(args: list[str], out: Path, steps: int) -> Path:
    return fit(load_config(None, [*args, f"run.out_dir={out}", f"optim.steps={steps}", f"run.save_every={steps}"]))


def test_pixel_cache_trains_exactly_like_the_images(tmp_path, encoder):
    folder = write_images(tmp_path / "data", EXACT)
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", "data.bucket_top_k=1"]
    cache = build_cache(load_config(None, [*args, f"data.cache_dir={tmp_path / 'cache'}"]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert [tuple(item["crop"]) for item in manifest["items"]] == EXACT  # each image is its own bucket
    assert manifest["match"]["unit"] == 4 and manifest["latent"]["space"] == "pixels"
    online = fit_for(args, tmp_path / "online", 6)  # 3 epochs of 2 steps
    cached = fit_for([*args, f"data.cache_dir={cache}"], tmp_path / "cached", 6)
    assert worst_difference(weights(online), weights(cached)) == 0.0  # bit-identical


def test_a_cache_equals_epoch_0_even_with_random_crops(tmp_path, encoder):
    folder = write_images(tmp_path / "data", [(40, 24), (24, 40), (33, 17), (20, 30), (100, 60), (12, 48), (18, 18), (30, 9)])
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}"]  # bucket_top_k 4: crops differ per epoch
    cache = build_cache(load_config(None, [*args, f"data.cache_dir={tmp_path / 'cache'}"]))
    online = fit_for(args, tmp_path / "online", 2)  # one epoch: the crops the cache froze
    cached = fit_for([*args, f"data.cache_dir={cache}"], tmp_path / "cached", 2)
    assert worst_difference(weights(online), weights(cached)) == 0.0


def test_vae_cache_needs_no_vae_and_no_caption_encoding(tmp_path, encoder, vae, monkeypatch):
    folder = write_images(tmp_path / "data", EXACT)
    args = [*LATENT, f"text.encoder={encoder}", f"data.path={folder}", f"data.vae={vae}", "data.bucket_top_k=1"]
    cache = build_cache(load_config(None, [*args, f"data.cache_dir={tmp_path / 'cache'}"]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["latent"] == {"space": "vae", "channels": 4, "downsample": 2, "scale": 0.13025, "shift": 0.0}
    item, caption = CachedItems.open(load_config(None, [*args, f"data.cache_dir={cache}"]))[1]
    assert item.mean.shape == item.std.shape == (4, 6, 10) and caption == (folder / "img001.txt").read_text()
    online = fit_for(args, tmp_path / "online", 4)

    import lumina.text_encoders
    import train.latents

    def forbidden(*args, **kwargs):
        raise AssertionError("training from a cache must not load the VAE or encode captions")

    monkeypatch.setattr(train.latents.VAESpace, "__init__", forbidden)
    monkeypatch.setattr(lumina.text_encoders.TextEncoder, "encode", forbidden)
    cached = fit_for([*args, f"data.cache_dir={cache}"], tmp_path / "cached", 4)
    # the VAE encodes each step's images in a batch of another composition than the cache's, which
    # may move the last bits of a latent (on this CPU they agree exactly; the bound is 1e-5 after
    # 4 Adam steps at lr 2e-3)
    assert worst_difference(weights(online), weights(cached)) < 1e-5


@pytest.mark.parametrize("override, message", [
    ("data.image_size=32", "built with data.image_size=16 but the config has 32: set data.image_size=16, or rebuild"),
    ("model.patch_size=2", "built with model.patch_size × model.vae_downsample=4 but the config has 2"),
    ("data.bucket_top_k=2", "built with data.bucket_top_k=4"),
    ("text.encoder={other}", "built with text.encoder="),
    ("data.cache_dir={empty}", "holds no cache (no manifest.json): build it with `python -m train cache"),
])
def test_a_mismatching_cache_is_an_error_naming_the_key(tmp_path, encoder, override, message):
    folder = write_images(tmp_path / "data", EXACT[:4])
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}",
            f"run.out_dir={tmp_path / 'run'}"]
    build_cache(load_config(None, args))
    shutil.copytree(encoder, tmp_path / "other")  # the same encoder elsewhere: still another folder
    (tmp_path / "empty").mkdir()
    config = load_config(None, [*args, override.format(other=tmp_path / "other", empty=tmp_path / "empty")])
    with pytest.raises(ConfigError) as info:
        fit(config)
    assert message in str(info.value)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_unreadable_images_are_skipped_with_a_count(tmp_path, encoder, caplog):
    folder = write_images(tmp_path / "data", EXACT[:5])
    (folder / "img001.png").write_bytes(b"not a png")
    args = [*PIXEL, f"text.encoder={encoder}", f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}"]
    with caplog.at_level(logging.WARNING):
        cache = build_cache(load_config(None, args))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["skipped"] == 1 and [Path(i["image"]).name for i in manifest["items"]] == [
        "img000.png", "img002.png", "img003.png", "img004.png"]
    assert "skipping unreadable image" in caplog.text and "left 1 unreadable image(s) out of the cache" in caplog.text
    assert len(CachedItems.open(load_config(None, args))) == 4
