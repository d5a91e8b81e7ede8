"""lumina.sample rejects bad settings with a LuminaInputError that names the problem, before any
model call."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina import LuminaInputError

from lumina_support import with_image_start

SHAPE = (1, 4, 8, 8)


@pytest.fixture
def latent() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def bad(model, captions, model_calls):
    """bad(match, **kwargs): sample must raise LuminaInputError matching `match`, calling no model."""

    def check(match: str, **kwargs) -> LuminaInputError:
        cond, uncond = captions
        with pytest.raises(LuminaInputError, match=match) as info:
            lumina.sample(model, cond, uncond, **with_image_start(kwargs))
        assert model_calls == [], "the error came only after model calls"
        return info.value

    return check


def test_is_a_value_error():
    assert issubclass(LuminaInputError, ValueError) and issubclass(LuminaInputError, lumina.LuminaError)


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("solver", "ddim", r"unknown solver 'ddim'; choose one of euler, midpoint, heun, rk4, dopri5"),
        ("schedule", "cosine", r"unknown schedule 'cosine'; choose one of shift, uniform, sigmoid"),
        ("cfg_mode", "rescaled", r"unknown cfg mode 'rescaled'; choose one of official, standard"),
        ("step_convention", "steps", r"unknown step convention 'steps'; choose one of grid_points, model_steps"),
    ],
)
def test_unknown_names(bad, setting, value, match):
    bad(match, latent_shape=SHAPE, **{setting: value})


@pytest.mark.parametrize(
    ("steps", "convention"), [(0, "model_steps"), (-3, "model_steps"), (1, "grid_points"), (0, "grid_points")]
)
def test_too_few_steps(bad, steps, convention):
    bad(rf"steps={steps} is too few", latent_shape=SHAPE, steps=steps, step_convention=convention)


def test_negative_cfg(bad):
    bad(r"cfg=-1\.0 is negative", latent_shape=SHAPE, cfg=-1.0)


@pytest.mark.parametrize("start_time", [-0.1, 1.01])
def test_start_time_outside_unit_interval(bad, latent, start_time):
    bad(rf"λ={start_time} is outside \[0, 1\]", x_start=latent, start_time=start_time)


@pytest.mark.parametrize("strength", [-0.5, 1.5])
def test_strength_outside_unit_interval(bad, latent, strength):
    bad(rf"strength={strength} is outside \[0, 1\]", x_start=latent, strength=strength)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 4, 7, 8), r"latent shape \(1, 4, 7, 8\): latent size 7×8 is not a positive multiple of the patch size 2.*16 pixels"),
        ((1, 4, 8, 9), r"latent shape \(1, 4, 8, 9\).*multiple of the patch size 2"),
        ((1, 3, 8, 8), r"latent shape \(1, 3, 8, 8\) has 3 channels but this .* model takes 4-channel latents"),
        ((4, 8, 8), r"latent shape \(4, 8, 8\).*\(batch, 4, h, w\)"),
        ((1, 4, 0, 8), r"latent shape \(1, 4, 0, 8\)"),
    ],
)
def test_latent_shape_the_model_cannot_take(bad, shape, match):
    bad(match, latent_shape=shape)


def test_x_start_shape_checked_too(bad):
    bad(r"latent shape \(1, 3, 8, 8\)", x_start=torch.zeros(1, 3, 8, 8), start_time=0.5)


def test_x_start_without_start_time(bad, latent):
    bad(r"image-to-image needs start_time λ or strength", x_start=latent)


def test_unknown_setting_names_the_known_ones(model, captions):
    cond, uncond = captions
    with pytest.raises(TypeError, match=r"unknown sampling setting\(s\) stpes; the settings are atol, cfg"):
        lumina.sample(model, cond, uncond, SHAPE, stpes=4)


@pytest.mark.parametrize("cfg", [float("nan"), float("inf")])
def test_non_finite_cfg(bad, cfg):
    bad(rf"cfg={cfg} is not a finite number", latent_shape=SHAPE, cfg=cfg)


def test_start_time_and_strength_together(bad, latent):
    bad(r"give start_time \(λ\) or strength, not both", x_start=latent, start_time=0.5, strength=0.5)


def test_no_shape_at_all(bad):
    bad(r"give latent_shape")


@pytest.mark.parametrize("noise_shape", [(1, 4, 8, 10), (2, 4, 8, 8), (4, 8, 8)])
def test_noise_of_the_wrong_shape(bad, latent, noise_shape):
    bad(r"noise shape .* does not match the latent shape \(1, 4, 8, 8\)", latent_shape=SHAPE, noise=torch.zeros(noise_shape))
    bad(r"noise shape .* does not match", x_start=latent, start_time=0.3, noise=torch.zeros(noise_shape))


def test_caption_batch_that_cannot_serve_the_latents(model, captions):
    cond, _ = captions
    two = lumina.Conditioning(cond.cap_feats.expand(2, -1, -1), cond.cap_mask.expand(2, -1))
    with pytest.raises(LuminaInputError, match="a conditioning of batch 2 cannot serve 3 latents"):
        lumina.sample(model, two, None, (3, 4, 8, 8), steps=2)


@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_non_positive_shift(bad, shift):
    bad(r"shift", latent_shape=SHAPE, shift=shift)


@pytest.mark.parametrize("scale", [0.0, -2.0])
def test_non_positive_sigmoid_scale(bad, scale):
    bad(rf"sigmoid_scale={scale} must be positive", latent_shape=SHAPE, schedule="sigmoid", sigmoid_scale=scale)
