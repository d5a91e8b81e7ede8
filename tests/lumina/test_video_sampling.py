"""`lumina.sample_video` on the shared solvers: the official Euler path (the golden trajectories are
in test_lumina_video.py), explicit grids, other solvers, video-to-video starts, unguided runs, the
time-aware cfg scaling the nodes use, and loading the released folder through `lumina.load_model`."""

from __future__ import annotations

import argparse

import pytest
import torch

import lumina
from lumina.conditioning import Conditioning
from lumina.editing import ImageStart
from lumina.errors import LuminaInputError
from lumina.model.lumina_video import LuminaVideo
from lumina.sampling import seeded_noise
from lumina.video_config import LuminaVideoConfig, infer_video_config
from lumina.video_sampling import sample_video, scaled_cfg, time_grid, video_sample_settings

SHAPE = (2, 4, 2, 4, 4)  # (B, C, F, H, W): two latent frames of 4×4


@pytest.fixture(scope="module")
def model() -> LuminaVideo:
    config = LuminaVideoConfig(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, cap_feat_dim=16, multiple_of=16,
                               patches=((2, 1), (2, 2)), in_channels=4)
    torch.manual_seed(0)
    m = LuminaVideo(config)
    with torch.no_grad():  # every parameter nonzero (the gates start at zero otherwise)
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return m.eval()


def caption(seed: int, length: int = 5) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, length - 1:] = False
    return Conditioning(torch.randn(1, length, 16, generator=g), mask)


SETTINGS = video_sample_settings("f16F64R512", steps=5, patch_comb=("2x2", (0.5, "1x2")))


def test_seed_noise_and_explicit_grid_are_the_same_run(model):
    cond, uncond = caption(1), caption(2, 3)
    by_seed = sample_video(model, cond, uncond, SHAPE, SETTINGS, seed=7)
    by_noise = sample_video(model, cond, uncond, settings=SETTINGS, noise=seeded_noise(SHAPE, 7))
    by_grid = sample_video(model, cond, uncond, SHAPE, SETTINGS, seed=7, grid=time_grid(5, SETTINGS.time_shift))
    assert torch.equal(by_seed, by_noise) and torch.equal(by_seed, by_grid)
    assert by_seed.shape == SHAPE and by_seed.dtype == torch.float32
    assert not torch.equal(by_seed, sample_video(model, cond, uncond, SHAPE, SETTINGS, seed=8))


def test_items_are_independent_and_one_caption_serves_the_batch(model):
    cond, uncond = caption(1), caption(2)
    noise = seeded_noise(SHAPE, 3)
    both = sample_video(model, cond, uncond, settings=SETTINGS, noise=noise)
    second = sample_video(model, cond, uncond, settings=SETTINGS, noise=noise[1:])
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)


def test_zero_guidance_equals_the_unguided_run(model):
    cond = caption(1)
    off = SETTINGS.with_(cfg=0.0)
    assert torch.equal(sample_video(model, cond, caption(2), SHAPE, off, seed=1), sample_video(model, cond, None, SHAPE, off, seed=1))
    assert not torch.equal(sample_video(model, cond, caption(2), SHAPE, SETTINGS, seed=1),
                           sample_video(model, cond, None, SHAPE, SETTINGS, seed=1))


def test_other_solvers_and_the_callback(model):
    seen = []
    out = sample_video(model, caption(1), caption(2), SHAPE, SETTINGS, seed=1, solver="midpoint",
                       callback=lambda info: seen.append((info.step, info.total, info.x.shape)))
    assert seen == [(i, 4, SHAPE) for i in range(1, 5)]
    assert torch.isfinite(out).all() and not torch.equal(out, sample_video(model, caption(1), caption(2), SHAPE, SETTINGS, seed=1))
    traj = sample_video(model, caption(1), caption(2), SHAPE, SETTINGS, seed=1, trajectory=True)
    assert traj.shape == (5, *SHAPE)


def test_video_to_video_starts(model):
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    kept = sample_video(model, caption(1), caption(2), settings=SETTINGS, start=ImageStart(latent, start_time=1.0))
    assert torch.equal(kept, latent)
    edited = sample_video(model, caption(1), caption(2), settings=SETTINGS, start=ImageStart(latent, strength=0.5), seed=2)
    assert edited.shape == SHAPE and not torch.equal(edited, latent)


def test_scaled_cfg_keeps_the_switches():
    assert scaled_cfg((20.0, (0.2, 0.0)), 7.0) == (7.0, (0.2, 0.0))
    assert scaled_cfg(12.0, 3.0) == 3.0


def test_bad_calls_name_the_problem(model):
    with pytest.raises(LuminaInputError, match="frames, height, width"):
        sample_video(model, caption(1), caption(2), (1, 4, 4, 4), SETTINGS)
    with pytest.raises(LuminaInputError, match="time grid must rise"):
        sample_video(model, caption(1), caption(2), SHAPE, SETTINGS, grid=torch.tensor([0.5, 0.2]))
    with pytest.raises(LuminaInputError, match="5×4 is not a positive multiple of the largest patch size 2"):
        sample_video(model, caption(1), caption(2), (1, 4, 2, 5, 4), SETTINGS)
    with pytest.raises(LuminaInputError, match="temporal patch size 2"):
        sample_video(model, caption(1), caption(2), (1, 4, 3, 4, 4), SETTINGS)
    with pytest.raises(LuminaInputError, match="NaN"):
        sample_video(model, caption(1), caption(2), settings=SETTINGS, noise=torch.full(SHAPE, float("nan")))


def test_the_released_folder_loads_through_load_model(tmp_path, model):
    folder = tmp_path / "Lumina-Video-f24R960"
    folder.mkdir()
    # torch.compile-prefixed layer keys, as released; model_args.pth (a pickled Namespace) is never read
    torch.save({f"_orig_mod.{k}" if k.startswith("layers.") else k: v for k, v in model.state_dict().items()},
               folder / "consolidated.00-of-01.pth")
    torch.save(argparse.Namespace(model="MultiScaleNextDiT_2B_GQA"), folder / "model_args.pth")
    loaded = lumina.load_model(folder)
    assert isinstance(loaded, lumina.LuminaVideo) and loaded.config == infer_video_config(model.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
