"""Two-object scenes (train/scenes.py) and moving-clip measures (train/clip_measure.py): the
renders are read back right, so a generated picture's errors are the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train import moving_shapes
from train.clip_measure import direction, measure_clip, score_clips
from train.scenes import PairSpec, PairsDataset, all_pairs, measure_pair, render_pair, score_pairs, split_pairs


def test_split_is_deterministic_and_held_out_quadruples_never_train():
    train, held = split_pairs()
    assert (train, held) == split_pairs()
    assert len(held) >= 40 and len(train) + len(held) == len(all_pairs())
    assert not {p.combination for p in train} & {p.combination for p in held}
    assert split_pairs(seed=1)[1] != held


def test_caption_names_both_shapes():
    pair = PairSpec("red", "circle", "blue", "square")
    assert pair.caption() == "a red circle at the left and a blue square at the right on a white background"
    assert pair.half("right").caption() == "a small blue square at the right on a white background"
    with pytest.raises(ValueError, match="must differ"):
        PairSpec("red", "circle", "red", "square")
    with pytest.raises(ValueError, match="unknown left shape"):
        PairSpec("red", "star", "blue", "square")


def test_jittered_renders_are_read_back_half_by_half():
    rng = np.random.default_rng(0)
    scenes = [all_pairs()[i] for i in rng.choice(len(all_pairs()), 200, replace=False)]
    images = [render_pair(p, 32, np.random.default_rng([0, i])) for i, p in enumerate(scenes)]
    assert score_pairs(images, scenes) == {"colour": 1.0, "shape": 1.0, "both": 1.0}
    swapped = [PairSpec(p.right_colour, p.right_shape, p.left_colour, p.left_shape, p.background) for p in scenes]
    assert score_pairs(images, swapped)["colour"] == 0.0  # the halves are told apart
    found = measure_pair(images[0])
    assert found["left"]["colour"] == scenes[0].left_colour and found["right"]["shape"] == scenes[0].right_shape


def test_dataset_items_are_fixed_by_index():
    data = PairsDataset(repeats=2, seed=3)
    image, caption = data[5]
    again, _ = PairsDataset(repeats=2, seed=3)[5]
    assert image.shape == (3, 32, 32) and torch.equal(image, again) and " and a " in caption
    assert len(data) == 2 * len(split_pairs()[0])
    assert measure_pair(image)["left"]["colour"] == data.pairs[5].left_colour


@pytest.mark.parametrize("frames", [4, 8])
def test_clean_clips_are_read_back(frames):
    motions = moving_shapes.all_motions()
    clips = [moving_shapes.render_clip(m, frames, 32, np.random.default_rng([0, i])) for i, m in enumerate(motions)]
    assert score_clips(clips, motions) == {"direction": 1.0, "colour": 1.0, "shape": 1.0, "colour_and_shape": 1.0, "size": 1.0, "all": 1.0}


def test_direction_needs_real_travel_and_follows_frame_order():
    motion = ("red", "circle", "small", "right", "white")
    clip = moving_shapes.render_clip(motion, 6)
    assert direction(list(clip)) == "right" and direction(list(clip[::-1])) == "left"
    still = np.stack([clip[0]] * 6)
    assert measure_clip(still)["direction"] is None
    blank = np.full_like(clip, 255)
    assert measure_clip(blank) == {"direction": None, "colour": None, "shape": None, "size": None, "background": "white"}


def test_a_shape_that_changes_between_frames_fails_the_constancy_check():
    a = moving_shapes.render_clip(("red", "circle", "small", "down", "gray"), 4)
    b = moving_shapes.render_clip(("red", "square", "small", "down", "gray"), 4)
    mixed = np.concatenate([a[:2], b[2:]])
    assert measure_clip(mixed)["shape"] is None and measure_clip(mixed)["direction"] == "down"
    tensor = torch.from_numpy(a).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, F, H, W) in [-1, 1]
    assert measure_clip(tensor)["shape"] == "circle"


def test_scenes_are_a_data_kind_and_a_source(tmp_path):
    """data.kind: scenes trains on the two-object scenes' training split; as a data.sources entry
    it mixes with the single shapes (the demo's world)."""
    from train.config import ConfigError, TrainConfig, check_sources, validate
    from train.data import build_dataset, dataset_captions

    config = TrainConfig()
    config.data.kind, config.data.repeats = "scenes", 1
    config.text.encoder = str(tmp_path)
    validate(config)
    data = build_dataset(config)
    assert isinstance(data, PairsDataset) and len(data) == len(split_pairs()[0])
    assert all(" and a " in c for c in dataset_captions(data))
    held = {p.caption() for p in split_pairs()[1]}
    assert not held & set(dataset_captions(data))

    mixed = TrainConfig()
    mixed.data.kind, mixed.data.repeats = "shapes", 1
    mixed.data.sources = [{"kind": "shapes", "weight": 1}, {"kind": "scenes", "weight": 1}]
    check_sources(mixed)
    captions = dataset_captions(build_dataset(mixed))
    assert any(" and a " in c for c in captions) and any(" and a " not in c for c in captions)

    mixed.model.vae_downsample = 8
    with pytest.raises(ConfigError, match="pixel-space"):
        check_sources(mixed)


def test_held_out_motions_never_train():
    """The moving shapes keep (colour, shape, size, direction) combinations out of training, like the stills."""
    from train.config import TrainConfig
    from train.data import build_dataset

    train, held = moving_shapes.split_motions()
    assert (train, held) == moving_shapes.split_motions() and len(held) >= 40
    assert not {m[:4] for m in train} & {m[:4] for m in held}
    config = TrainConfig()
    config.data.kind, config.data.frames, config.data.repeats = "moving_shapes", 4, 1
    data = build_dataset(config)
    assert data.motions == train and len(data) == len(train)
