"""Classifier-free guidance: the official channel-3 quirk, the textbook rule, and cfg = 1."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.guidance import CFG_MODES, combine, official_cfg, standard_cfg
from lumina.sampling import guided_velocity

SHAPE = (2, 4, 8, 8)


@pytest.fixture
def velocities(gen):
    return torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)


def test_official_leaves_channel_3_conditional(velocities):
    c, u = velocities
    g = official_cfg(c, u, 4.0)
    assert torch.equal(g[:, 3:], c[:, 3:])
    torch.testing.assert_close(g[:, :3], u[:, :3] + 4.0 * (c[:, :3] - u[:, :3]), rtol=0, atol=0)


def test_standard_guides_every_channel(velocities):
    c, u = velocities
    torch.testing.assert_close(standard_cfg(c, u, 4.0), u + 4.0 * (c - u), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.0])
def test_modes_agree_on_channels_0_to_2(velocities, scale):
    c, u = velocities
    off, std = combine(c, u, scale, "official"), combine(c, u, scale, "standard")
    assert torch.equal(off[:, :3], std[:, :3])
    if scale != 1.0:
        assert not torch.allclose(off[:, 3:], std[:, 3:])


@pytest.mark.parametrize("mode", CFG_MODES)
def test_scale_one_is_conditional(velocities, mode):
    c, u = velocities
    torch.testing.assert_close(combine(c, u, 1.0, mode), c, rtol=0, atol=1e-6)


def test_scale_zero_is_unconditional_on_guided_channels(velocities):
    c, u = velocities
    assert torch.equal(standard_cfg(c, u, 0.0), u)
    assert torch.equal(official_cfg(c, u, 0.0)[:, :3], u[:, :3])


def test_unknown_mode(velocities):
    with pytest.raises(ValueError, match=r"unknown cfg mode 'rescaled'.*official.*standard"):
        combine(*velocities, 4.0, "rescaled")


# --- the guided velocity the sampler integrates --------------------------------------------------------
def test_guided_velocity_is_one_batched_forward(model, captions, model_calls, gen):
    cond, uncond = captions
    x, t = torch.randn(SHAPE, generator=gen), torch.tensor(0.4)
    with torch.no_grad():
        v = guided_velocity(model, cond, uncond, 3.0, "standard")(x, t)
        assert model_calls == [4]  # [cond; uncond] for both latents in one call
        vc = model(x, t.expand(2), cond.cap_feats.expand(2, -1, -1), cond.cap_mask.expand(2, -1))
        vu = model(x, t.expand(2), uncond.cap_feats.expand(2, -1, -1), uncond.cap_mask.expand(2, -1))
    torch.testing.assert_close(v, standard_cfg(vc, vu, 3.0), rtol=0, atol=1e-5)


def test_guided_velocity_cfg_one_is_the_conditional_forward(model, captions, model_calls, gen):
    cond, uncond = captions
    x, t = torch.randn(SHAPE, generator=gen), torch.tensor(0.7)
    with torch.no_grad():
        v = guided_velocity(model, cond, uncond, 1.0)(x, t)
        assert model_calls == [2]  # the unconditional half is skipped
        vc = model(x, t.expand(2), cond.cap_feats.expand(2, -1, -1), cond.cap_mask.expand(2, -1))
    assert torch.equal(v, vc)


def test_sample_modes_differ_only_through_channel_3(model, captions):
    """One Euler step: official and standard CFG agree on channels 0..2 and differ on channel 3."""
    cond, uncond = captions
    kw = dict(steps=2, cfg=4.0)
    off = lumina.sample(model, cond, uncond, (1, 4, 8, 8), cfg_mode="official", **kw)
    std = lumina.sample(model, cond, uncond, (1, 4, 8, 8), cfg_mode="standard", **kw)
    torch.testing.assert_close(off[:, :3], std[:, :3], rtol=0, atol=1e-6)
    assert (off[:, 3] - std[:, 3]).abs().max() > 1e-3
