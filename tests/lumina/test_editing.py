"""Image-to-image: starting the flow part-way from a latent (λ editing and the official strength)."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.editing import noisy_start, normalize_channels, strength_start_index
from lumina.flow import time_grid

from lumina_support import with_image_start

SHAPE = (1, 4, 8, 8)


@pytest.fixture
def latent() -> torch.Tensor:
    return 3.0 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(99)) + 0.5


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(100))


def edit(model, captions, **kwargs) -> torch.Tensor:
    cond, uncond = captions
    return lumina.sample(model, cond, uncond, **with_image_start(kwargs))


# --- the pieces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.75, 1.0])
def test_noisy_start_formula(latent, noise, lam):
    torch.testing.assert_close(noisy_start(latent, noise, lam), lam * latent + (1 - lam) * noise, rtol=0, atol=1e-6)


def test_noisy_start_endpoints_exact(latent, noise):
    assert torch.equal(noisy_start(latent, noise, 1.0), latent)
    assert torch.equal(noisy_start(latent, noise, 0.0), noise)


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_noisy_start_rejects_bad_time(latent, noise, lam):
    with pytest.raises(lumina.LuminaInputError, match=rf"λ={lam} is outside \[0, 1\]"):
        noisy_start(latent, noise, lam)


def test_normalize_channels_per_item():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 16, 12, generator=g) * torch.tensor([1.0, 5.0, 0.1, 2.0])[:, None, None] + torch.tensor(
        [-3.0, 0.0, 7.0, 1.0]
    )[:, None, None]
    x[1] = 4 * x[1] - 2  # a second item with different statistics
    y = normalize_channels(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=(2, 3)), torch.zeros(2, 4), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.std(dim=(2, 3), unbiased=False), torch.ones(2, 4), rtol=0, atol=1e-4)
    # each item is normalised on its own: item 1 (an affine map of item 0's data) does not affect item 0
    torch.testing.assert_close(normalize_channels(x[:1]), y[:1], rtol=0, atol=0)


def test_strength_start_index():
    assert strength_start_index(0.6, 30) == 12  # official img2img default
    assert strength_start_index(1.0, 30) == 0
    assert strength_start_index(0.0, 30) == 30
    for bad in (-0.1, 1.2):
        with pytest.raises(lumina.LuminaInputError, match=rf"strength={bad} is outside \[0, 1\]"):
            strength_start_index(bad, 30)


# --- through sample ------------------------------------------------------------------------------------
def test_start_time_one_returns_the_latent(model, captions, latent):
    assert torch.equal(edit(model, captions, x_start=latent, start_time=1.0), latent)


def test_start_time_one_calls_no_model(model, captions, model_calls, latent):
    traj = edit(model, captions, x_start=latent, start_time=1.0, trajectory=True)
    assert traj.shape == (1, *SHAPE) and torch.equal(traj[0], latent)
    assert model_calls == []


def test_start_time_one_with_normalisation(model, captions, latent):
    assert torch.equal(edit(model, captions, x_start=latent, start_time=1.0, normalize_start=True), normalize_channels(latent))


def test_start_time_zero_is_text_to_image(model, captions, latent, noise):
    t2i = edit(model, captions, latent_shape=SHAPE, noise=noise, steps=5)
    i2i = edit(model, captions, x_start=latent, start_time=0.0, noise=noise, steps=5)
    assert torch.equal(i2i, t2i)


@pytest.mark.parametrize("lam", [0.25, 0.6])
def test_start_time_rescales_the_grid(model, captions, model_calls, latent, noise, lam):
    seen = []
    traj = edit(model, captions, x_start=latent, start_time=lam, noise=noise, steps=6, callback=seen.append, trajectory=True)
    torch.testing.assert_close(traj[0], noisy_start(latent, noise, lam), rtol=0, atol=0)
    grid = lam + (1 - lam) * time_grid(6, "shift", 4.0)
    assert [s.t for s in seen] == pytest.approx(grid[1:].tolist(), abs=1e-7)
    assert seen[-1].t == 1.0
    assert len(model_calls) == 5  # the same number of steps, on [λ, 1]


def test_strength_starts_from_the_official_grid_point(model, captions, model_calls, latent, noise):
    grid = time_grid(30, "shift", 4.0)
    seen = []
    traj = edit(model, captions, x_start=latent, strength=0.6, noise=noise, steps=30, callback=seen.append, trajectory=True)
    t0 = grid[12].item()
    torch.testing.assert_close(traj[0], t0 * latent + (1 - t0) * noise, rtol=0, atol=1e-6)
    assert [s.t for s in seen] == grid[13:].tolist()
    assert len(model_calls) == 30 - 12 - 1
    assert traj.shape[0] == 30 - 12


def test_strength_one_is_text_to_image(model, captions, latent, noise):
    t2i = edit(model, captions, latent_shape=SHAPE, noise=noise, steps=5)
    assert torch.equal(edit(model, captions, x_start=latent, strength=1.0, noise=noise, steps=5), t2i)


def test_strength_zero_returns_the_latent(model, captions, model_calls, latent):
    assert torch.equal(edit(model, captions, x_start=latent, strength=0.0, steps=5), latent)
    assert model_calls == []


def test_normalize_start_changes_the_start(model, captions, latent, noise):
    lam = 0.5
    traj = edit(model, captions, x_start=latent, start_time=lam, noise=noise, steps=3, normalize_start=True, trajectory=True)
    torch.testing.assert_close(traj[0], noisy_start(normalize_channels(latent), noise, lam), rtol=0, atol=0)
