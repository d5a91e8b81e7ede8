"""The Lumina-Video step (train/video_objective.py) on a tiny random LuminaVideo: the entries that fit
a latent, motion dropout, frames cut to whole temporal patches, the official loss (MSE + velocity
direction), and a loss that falls on a few fixed clips with every entry trained each step."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.video_config import LuminaVideoConfig
from train.config import ConfigError
from train.objective import draw_noise_and_t
from train.video_objective import (
    drop_motion,
    entry_times,
    fitting_entries,
    init_video_weights,
    lumina_video_loss,
    whole_temporal_patches,
)

CONFIG = LuminaVideoConfig(dim=64, n_layers=2, n_heads=2, cap_feat_dim=16, multiple_of=16, patches=((2, 1), (2, 2), (4, 2)),
                           in_channels=4)


def test_entries_that_fit_the_latent():
    assert fitting_entries(CONFIG, 4, 8, 8) == [(2, 1), (2, 2), (4, 2)]
    assert fitting_entries(CONFIG, 3, 8, 8) == [(2, 1)]  # 3 latent frames: no frame pairs
    assert fitting_entries(CONFIG, 1, 6, 6) == [(2, 1), (2, 2)]  # one frame is repeated to any f_patch; 6 % 4 ≠ 0


def test_clips_are_cut_to_whole_temporal_patches():
    x = torch.arange(2 * 1 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 1, 5, 2, 2)
    assert torch.equal(whole_temporal_patches(x, 2), x[:, :, :4])  # the official x[:, :F // pF * pF]
    assert whole_temporal_patches(x, 1) is x
    assert whole_temporal_patches(x[:, :, :1], 2).shape[2] == 1  # one frame: an image, repeated by the model
    assert torch.equal(whole_temporal_patches(list(x), 5), x)  # a bucket's list of one shape is stacked
    with pytest.raises(ConfigError, match="fewer than the temporal patch 4: raise data.min_frames"):
        whole_temporal_patches(x[:, :, :3], 4)


def test_entry_times_are_the_official_shift():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(entry_times(t, 4.0), t / (t + 4 - 4 * t))  # s > 1: towards noise (t = 0)
    assert torch.equal(entry_times(t, 1.0), t)


def test_the_velocity_direction_term():
    torch.manual_seed(0)
    model = lumina.LuminaVideo(CONFIG)
    data, noise = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 4, 2, 8, 8)
    t, feats, mask, motion = torch.tensor([0.3, 0.7]), torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2)
    with torch.no_grad():
        mse = lumina_video_loss(model, data, noise, t, feats, mask, motion, (2, 1))
        both = lumina_video_loss(model, data, noise, t, feats, mask, motion, (2, 1), vd_weight=0.5)
        pred = model(t[:, None, None, None, None] * data + (1 - t[:, None, None, None, None]) * noise, t, feats, mask, motion, 2, 1)
    target = (data - noise).flatten(1)
    cos = torch.nn.functional.cosine_similarity(pred.flatten(1), target, dim=1)
    assert torch.allclose(mse, ((pred.flatten(1) - target) ** 2).mean(1).mean())
    assert torch.allclose(both, mse + 0.5 * (1 - cos).mean())


def test_the_official_initialisation():
    model = lumina.LuminaVideo(CONFIG)
    init_video_weights(model)
    zero = [n for n, p in model.named_parameters() if not p.detach().abs().max() > 0]
    assert "motion_embedder.mlp.2.weight" in zero and "cap_embedder.1.weight" in zero
    assert all(f"all_final_layer.{k}.linear.weight" in zero for k in ("2-1", "2-2", "4-2"))
    assert "layers.0.attention.gate" in zero and "layers.1.adaLN_modulation.1.weight" in zero
    assert "t_embedder.mlp.0.weight" not in zero and "all_x_embedder.2-1.weight" not in zero


def test_motion_dropout():
    g = torch.Generator().manual_seed(0)
    scores = drop_motion(torch.full((1000,), 5.0), 0.25, g)
    assert set(scores.tolist()) == {5.0, -1.0} and 0.2 < float((scores < 0).float().mean()) < 0.3
    assert torch.equal(drop_motion(torch.arange(4.0), 0.0, g), torch.arange(4.0))


def test_the_loss_falls_and_trains_every_entry():
    torch.manual_seed(0)
    model = lumina.LuminaVideo(CONFIG)
    g = torch.Generator().manual_seed(1)
    data = torch.randn(4, 4, 2, 8, 8, generator=g).cumsum(dim=2) * 0.5  # 4 fixed clips of 2 latent frames
    cap_feats, cap_mask = torch.randn(4, 5, 16, generator=g), torch.ones(4, 5, dtype=torch.bool)
    motion = torch.tensor([0.0, 2.0, 5.0, 10.0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    values, used = [], set()
    for step in range(30):
        step_g = torch.Generator().manual_seed(100 + step)
        noise, t = draw_noise_and_t(tuple(data.shape), step_g)
        entry = CONFIG.patches[step % 3]
        used.add(entry)
        before = {k: m.weight.detach().clone() for k, m in model.all_x_embedder.items()}
        loss = lumina_video_loss(model, data, noise, t, cap_feats, cap_mask, drop_motion(motion, 0.1, step_g), entry)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        key = f"{entry[0]}-{entry[1]}"
        assert not torch.equal(before[key], model.all_x_embedder[key].weight)  # the drawn entry learned
        values.append(loss.item())
    first, last = sum(values[:10]) / 10, sum(values[-10:]) / 10
    assert used == set(CONFIG.patches)
    assert last < 0.9 * first, f"loss {first:.3f} → {last:.3f} did not fall by 10 %"
