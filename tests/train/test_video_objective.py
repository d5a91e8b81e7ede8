"""The Lumina-Video step (train/video_objective.py) on a tiny random LuminaVideo: patch entries drawn
per step among those that fit, motion dropout, and a loss that falls on a few fixed clips."""

from __future__ import annotations

import pytest
import torch

import lumina
from lumina.video_config import LuminaVideoConfig
from train.config import ConfigError
from train.objective import draw_noise_and_t
from train.video_objective import draw_entry, drop_motion, fitting_entries, lumina_video_loss

CONFIG = LuminaVideoConfig(dim=64, n_layers=2, n_heads=2, cap_feat_dim=16, multiple_of=16, patches=((2, 1), (2, 2), (4, 2)),
                           in_channels=4)


def test_entries_that_fit_the_latent():
    assert fitting_entries(CONFIG, 4, 8, 8) == [(2, 1), (2, 2), (4, 2)]
    assert fitting_entries(CONFIG, 3, 8, 8) == [(2, 1)]  # 3 latent frames: no frame pairs
    assert fitting_entries(CONFIG, 1, 6, 6) == [(2, 1), (2, 2)]  # one frame is repeated to any f_patch; 6 % 4 ≠ 0
    g = torch.Generator().manual_seed(0)
    assert {draw_entry(CONFIG, (2, 4, 4, 8, 8), g) for _ in range(40)} == {(2, 1), (2, 2), (4, 2)}
    with pytest.raises(ConfigError, match=r"3 frame\(s\) × 5×5 fit none of the model's patch entries \(1x2, 2x2, 2x4"):
        draw_entry(CONFIG, (3, 5, 5), g)


def test_motion_dropout():
    g = torch.Generator().manual_seed(0)
    scores = drop_motion(torch.full((1000,), 5.0), 0.25, g)
    assert set(scores.tolist()) == {5.0, -1.0} and 0.2 < float((scores < 0).float().mean()) < 0.3
    assert torch.equal(drop_motion(torch.arange(4.0), 0.0, g), torch.arange(4.0))


def test_the_loss_falls_and_trains_every_drawn_entry():
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
        entry = draw_entry(CONFIG, tuple(data.shape), step_g)
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
