"""Frames (video, multi-view) through both families: (B, C, F, H, W) latents and lists of
(C, F, H, W) items, Next-DiT's 3-D RoPE, Flag-DiT's [nextframe] token, sampling and features.

Tiny random models: Next-DiT needs head_dim divisible by 6 for 3-D RoPE (here 24)."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina import ForwardOptions, LuminaInputError
from lumina.conditioning import Conditioning
from lumina.features.compositional import RegionalPrompts, grid_masks, token_weights
from lumina.features.region_adaptive import RegionAdaptive
from lumina.features.style_shared import SharedAttention
from lumina.memory import estimate_sampling_memory
from lumina.tokens import TokenLayout
from lumina_support import tiny_random_model

FAMILIES = ("next_dit", "flag_dit")
CAP = 16


def frame_model(family: str, *, seed: int = 0, **changes) -> lumina.LuminaDiT:
    """A small fp32 model with every parameter N(0, 0.2); head_dim 24 takes 3-D RoPE."""
    return tiny_random_model(family, seed=seed, dim=96, **changes)


@pytest.fixture(params=FAMILIES)
def model(request) -> lumina.LuminaDiT:
    return frame_model(request.param)


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run(model, x, cap=None, t=0.4, options=None):
    batch = x.shape[0] if isinstance(x, torch.Tensor) else len(x)
    cap = randn(batch, 5, CAP, seed=9) if cap is None else cap
    with torch.no_grad():
        return model(x, t, cap, None, options)


# -- the forward -------------------------------------------------------------------------------
def test_one_frame_is_the_image_path_exactly(model):
    x = randn(2, 4, 8, 12)
    image = run(model, x)
    video = run(model, x[:, :, None])
    assert video.shape == (2, 4, 1, 8, 12)
    assert torch.equal(video[:, :, 0], image)
    items = run(model, [x[0, :, None], randn(4, 1, 4, 6, seed=2)])
    assert torch.equal(items[0][:, 0], run(model, [x[0], randn(4, 4, 6, seed=2)])[0])


def test_video_output_shape_and_finite(model):
    out = run(model, randn(2, 4, 3, 8, 6))
    assert out.shape == (2, 4, 3, 8, 6) and bool(torch.isfinite(out).all())
    sigma = model(randn(1, 4, 2, 4, 4), 0.5, randn(1, 5, CAP), return_sigma=True)
    assert sigma.shape == (1, 8, 2, 4, 4)


def test_frames_interact(model):
    """Changing frame 0 changes frame 1's output (attention spans the frames)."""
    x = randn(1, 4, 3, 8, 8)
    y = x.clone()
    y[:, :, 0] += 1.0
    a, b = run(model, x), run(model, y)
    assert not torch.allclose(a[:, :, 1], b[:, :, 1], atol=1e-4)
    assert not torch.allclose(a[:, :, 2], b[:, :, 2], atol=1e-4)


def test_frame_order_matters(model):
    """Frames are not a bag: swapping two frames does not just swap their outputs."""
    x = randn(1, 4, 3, 4, 4)
    swapped = x[:, :, [1, 0, 2]]
    a, b = run(model, x), run(model, swapped)
    assert not torch.allclose(a[:, :, [1, 0, 2]], b, atol=1e-4)


def test_list_of_differently_sized_videos_equals_each_alone(model):
    items = [randn(4, 3, 8, 6, seed=1), randn(4, 2, 4, 8, seed=2), randn(4, 1, 6, 6, seed=3)]
    cap = randn(3, 5, CAP, seed=4)
    together = run(model, items, cap)
    for i, item in enumerate(items):
        alone = run(model, item[None], cap[i : i + 1])[0]
        assert together[i].shape == item.shape
        torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=1e-5)


def test_flag_dit_nextframe_tokens_sit_where_the_layout_says():
    model = frame_model("flag_dit")
    seen = []
    model.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    run(model, randn(1, 4, 3, 4, 6))
    seq = seen[0][0]
    layout = TokenLayout(3, 2, 3, nextline=True, nextframe=True)
    assert model.token_layout(3, 2, 3) == layout and seq.shape[0] == layout.length == 3 * (2 * 4 + 1)
    frame_ends = [(f + 1) * layout.frame_length - 1 for f in range(3)]
    row_ends = [f * layout.frame_length + r * layout.row_length + 3 for f in range(3) for r in range(2)]
    assert sorted(frame_ends + row_ends) == layout.special_slots().tolist()
    for slot in frame_ends:
        assert torch.equal(seq[slot], model.nextframe_token.detach())
    for slot in row_ends:
        assert torch.equal(seq[slot], model.eol_token.detach())
    assert not torch.equal(model.nextframe_token, model.eol_token)
    # 1-D RoPE over the flat sequence, [nextframe] included
    assert torch.equal(model.positions(layout)[:, 0], torch.arange(layout.length, dtype=torch.float32))


def test_next_dit_uses_3d_rope_over_frame_row_col():
    model = frame_model("next_dit")
    layout = model.token_layout(3, 2, 2)
    pos = model.positions(layout)
    assert pos.shape == (12, 3)
    assert pos[5].tolist() == [1.0, 0.0, 1.0]  # frame 1, row 0, col 1
    assert model.positions(model.token_layout(1, 2, 2)).shape == (4, 2)  # one frame: the image's 2-D RoPE


# -- bad input ---------------------------------------------------------------------------------
def test_zero_frames_is_refused(model):
    with pytest.raises(LuminaInputError, match=r"has 0 frames; .* needs at least one frame"):
        run(model, torch.zeros(1, 4, 0, 8, 8))
    with pytest.raises(LuminaInputError, match=r"x\[0\] has 0 frames"):
        run(model, [torch.zeros(4, 0, 8, 8)])


def test_lists_cannot_mix_images_and_frames(model):
    with pytest.raises(LuminaInputError, match=r"x\[1\] must be a \(4, frames, height, width\) latent like x\[0\].*cannot mix"):
        run(model, [randn(4, 2, 4, 4), randn(4, 4, 4)])
    with pytest.raises(LuminaInputError, match=r"x\[1\] must be a \(4, height, width\) latent like x\[0\]"):
        run(model, [randn(4, 4, 4), randn(4, 2, 4, 4)])


def test_flag_dit_without_nextframe_token_names_the_fix():
    model = frame_model("flag_dit", nextframe_token=False)
    assert not hasattr(model, "nextframe_token")
    assert "nextframe_token" not in model.state_dict()
    run(model, randn(1, 4, 1, 4, 4))  # one frame needs no [nextframe]
    fix = r"has 3 frames but this Flag-DiT .* no learned \[nextframe\] token.*fine-tune a \[nextframe\] token.*Next-DiT"
    with pytest.raises(LuminaInputError, match=fix):
        run(model, randn(1, 4, 3, 4, 4))
    cond = Conditioning(randn(1, 5, CAP), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(LuminaInputError, match=fix):
        lumina.sample(model, cond, None, (1, 4, 3, 4, 4), steps=2)


def test_released_flag_dit_checkpoint_loads_strictly_and_refuses_frames(tmp_path):
    """A state dict without `nextframe_token` (every released Lumina-T2I) loads with no such
    parameter; one with it loads it; both through save_official / load_model."""
    released = frame_model("flag_dit", nextframe_token=False)
    assert lumina.infer_config(released.state_dict()).nextframe_token is False
    loaded = lumina.load_model(released.state_dict())
    assert not loaded.config.nextframe_token
    with pytest.raises(LuminaInputError, match="fine-tune a \\[nextframe\\] token"):
        run(loaded, randn(1, 4, 2, 4, 4))

    new = frame_model("flag_dit")
    assert new.config.nextframe_token and lumina.infer_config(new.state_dict()).nextframe_token
    path = lumina.save_official(new, tmp_path / "video.safetensors")
    again = lumina.load_model(path)
    assert torch.equal(again.nextframe_token, new.nextframe_token)
    x = randn(1, 4, 2, 4, 4)
    assert torch.equal(run(again, x), run(new, x))


def test_next_dit_config_cannot_have_a_nextframe_token():
    with pytest.raises(ValueError, match="Next-DiT carries frames by 3-D RoPE"):
        lumina.LuminaConfig("next_dit", dim=96, n_layers=1, n_heads=4, cap_feat_dim=8, nextframe_token=True)


def test_next_dit_head_dim_that_cannot_take_three_axes():
    config = lumina.LuminaConfig("next_dit", dim=64, n_layers=1, n_heads=4, n_kv_heads=2, cap_feat_dim=CAP, multiple_of=16)
    model = lumina.build_model(config).eval()  # head_dim 16: images only
    run(model, randn(1, 4, 1, 4, 4))
    with pytest.raises(LuminaInputError, match=r"head_dim 16 cannot carry 3-D \(frame, row, col\) RoPE.*divisible by 6"):
        run(model, randn(1, 4, 2, 4, 4))


def test_region_adaptive_refuses_frames():
    model = frame_model("next_dit")
    cond = Conditioning(randn(1, 5, CAP), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(LuminaInputError, match=r"region-adaptive sampling runs on image latents .* turn it off"):
        lumina.sample(model, cond, None, (1, 4, 2, 8, 8), steps=6, wrappers=[RegionAdaptive(0.5, start_step=1)])


def test_sample_refuses_bad_shapes(model):
    cond = Conditioning(randn(1, 5, CAP), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(LuminaInputError, match="has 0 frames"):
        lumina.sample(model, cond, None, (1, 4, 0, 8, 8), steps=2)
    with pytest.raises(LuminaInputError, match=r"\(batch, 4, frames, h, w\) with frames"):
        lumina.sample(model, cond, None, (1, 4, 1, 2, 8, 8), steps=2)


# -- sampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["euler", "midpoint"])
@pytest.mark.parametrize("cfg_mode", ["official", "standard"])
def test_sample_video_shape(model, solver, cfg_mode):
    cond = Conditioning(randn(1, 5, CAP, seed=3), torch.ones(1, 5, dtype=torch.bool))
    uncond = Conditioning(randn(1, 3, CAP, seed=4), torch.ones(1, 3, dtype=torch.bool))
    shape = (1, 4, 3, 8, 8)
    out = lumina.sample(model, cond, uncond, shape, steps=3, solver=solver, cfg=3.0, cfg_mode=cfg_mode, seed=7)
    assert out.shape == shape and bool(torch.isfinite(out).all())
    # seeded noise is the official draw at the video's shape
    traj = lumina.sample(model, cond, uncond, shape, steps=3, solver=solver, cfg=3.0, cfg_mode=cfg_mode, seed=7,
                         trajectory=True)
    assert torch.equal(traj[0], lumina.seeded_noise(shape, 7))
    assert torch.equal(traj[-1], out)


def test_sample_one_frame_equals_image_sampling(model):
    cond = Conditioning(randn(1, 5, CAP, seed=3), torch.ones(1, 5, dtype=torch.bool))
    uncond = Conditioning(randn(1, 3, CAP, seed=4), torch.ones(1, 3, dtype=torch.bool))
    image = lumina.sample(model, cond, uncond, (1, 4, 8, 8), steps=3, seed=2)
    video = lumina.sample(model, cond, uncond, (1, 4, 1, 8, 8), noise=lumina.seeded_noise((1, 4, 8, 8), 2)[:, :, None],
                          steps=3)
    assert torch.equal(video[:, :, 0], image)


def test_memory_estimate_counts_frames():
    for family, per_frame, specials in (("next_dit", 16, 0), ("flag_dit", 4 * 5, 3)):
        config = frame_model(family).config
        assert estimate_sampling_memory(config, (1, 4, 8, 8)).tokens == per_frame
        assert estimate_sampling_memory(config, (1, 4, 3, 8, 8)).tokens == 3 * per_frame + specials
        assert estimate_sampling_memory(config, [(4, 3, 8, 8), (4, 1, 8, 8)]).tokens == 3 * per_frame + specials
        one = estimate_sampling_memory(config, (1, 4, 8, 8))
        assert estimate_sampling_memory(config, (1, 4, 1, 8, 8)).total == one.total
        assert estimate_sampling_memory(config, (1, 4, 5, 8, 8)).total > one.total


# -- features ----------------------------------------------------------------------------------
def test_style_shared_attention_across_video_items(model):
    x = randn(3, 4, 2, 4, 6)
    cap = randn(3, 5, CAP)
    plain = run(model, x, cap)
    shared = run(model, x, cap, options=ForwardOptions(features=(SharedAttention(reference=0),)))
    alone = run(model, x[:1], cap[:1])
    torch.testing.assert_close(shared[0], alone[0], atol=1e-5, rtol=1e-5)  # the reference stays its solo self
    for i in (1, 2):
        assert not torch.allclose(shared[i], plain[i], atol=1e-4)


def test_regional_prompts_apply_to_every_frame(model):
    masks = grid_masks(1, 2, 8, 8)
    regions = RegionalPrompts(randn(2, 4, CAP, seed=5), torch.ones(2, 4, dtype=torch.bool), masks)
    layout = model.token_layout(3, 4, 4)
    image = model.token_layout(1, 4, 4)
    weights, per_image = token_weights(masks, layout, 2), token_weights(masks, image, 2)
    patches = weights[:, layout.patch_slots()].reshape(2, 3, 16)
    for f in range(3):  # the same (h, w) regions on every frame
        assert torch.equal(patches[:, f], per_image[:, image.patch_slots()])
    assert bool((weights[:, layout.special_slots()] == 0).all())

    x = randn(1, 4, 3, 8, 8)
    cap = randn(1, 5, CAP)
    plain = run(model, x, cap)
    regional = run(model, x, cap, options=ForwardOptions(features=(regions,)))
    assert regional.shape == x.shape
    for f in range(3):
        assert not torch.allclose(regional[:, :, f], plain[:, :, f], atol=1e-4)
    # one frame of a video is exactly the image with the same regions
    one = run(model, x[:, :, :1], cap, options=ForwardOptions(features=(regions,)))
    assert torch.equal(one[:, :, 0], run(model, x[:, :, 0], cap, options=ForwardOptions(features=(regions,))))
