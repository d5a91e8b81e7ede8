"""(frames, height, width) buckets at one token budget (train/clip_buckets.py) and batches that
hold one bucket shape (train/data.py)."""

from __future__ import annotations

import pytest

from train.clip_buckets import clip_buckets, clip_tokens, frame_counts, nearest_buckets, token_budget
from train.config import ConfigError
from train.data import BatchPlan, epoch_batches


def test_token_arithmetic():
    assert token_budget(16, 4, unit=4) == 4 * 4 * 4  # frames × (16/4)²
    assert clip_tokens((4, 32, 8), unit=4) == 4 * 8 * 2
    assert clip_tokens((9, 16, 16), unit=4, temporal=4) == 3 * 16  # 9 = 4·2 + 1 frames → 3 latent frames
    assert clip_tokens((4, 16, 16), unit=4, f_patch=2) == 2 * 16  # frame pairs are one token deep
    assert frame_counts(4, 1) == [4, 3, 2, 1]
    assert frame_counts(13, 1, temporal=4) == [13, 9, 5, 1]
    assert frame_counts(4, 1, f_patch=2) == [4, 2]
    assert frame_counts(9, 5, temporal=4, f_patch=2) == [5]  # 9 → 3 latent frames, odd: out


@pytest.mark.parametrize("kwargs", [{}, {"min_frames": 1}, {"min_frames": 1, "temporal": 4}, {"min_frames": 1, "f_patch": 2}])
def test_every_bucket_is_within_the_budget_and_maximal(kwargs):
    frames = 9 if kwargs.get("temporal") else 4
    unit, side = 4, 16
    budget = token_budget(side, frames, unit, kwargs.get("temporal", 1), kwargs.get("f_patch", 1))
    buckets = clip_buckets(side, frames, unit, **kwargs)
    assert buckets and len(set(buckets)) == len(buckets)
    for count, width, height in buckets:
        assert width % unit == 0 and height % unit == 0 and max(width, height) / min(width, height) <= 4
        tokens = clip_tokens((count, width, height), unit, kwargs.get("temporal", 1), kwargs.get("f_patch", 1))
        assert tokens <= budget
    for count in {c for c, _, _ in buckets}:  # each clip length has a bucket that fills most of the budget
        best = max(clip_tokens(b, unit, kwargs.get("temporal", 1), kwargs.get("f_patch", 1)) for b in buckets if b[0] == count)
        assert best >= 0.75 * budget
    assert (frames, side, side) in buckets  # the longest clip at the square side


def test_shorter_clips_trade_length_for_area():
    buckets = clip_buckets(16, 4, 4, min_frames=1)
    square = {count: (w, h) for count, w, h in buckets if w == h}
    assert square == {4: (16, 16), 3: (16, 16), 2: (20, 20), 1: (32, 32)}  # 4·16, 3·16, 2·25, 1·64 ≤ 64 tokens


def test_assignment_trims_to_the_longest_count_then_matches_the_aspect():
    buckets = clip_buckets(16, 4, 4, min_frames=2)
    assert nearest_buckets(3, 40, 24, buckets, 2) == [(3, 20, 12), (3, 24, 12)]  # 5:3 → 20×12 exactly, then 2:1
    assert nearest_buckets(100, 16, 64, buckets, 1) == [(4, 8, 32)]  # longer clips are trimmed to 4 frames
    assert nearest_buckets(1, 16, 16, buckets, 1) == []  # shorter than every bucket
    only_four = clip_buckets(16, 4, 4)
    assert {count for count, _, _ in only_four} == {4} and nearest_buckets(3, 16, 16, only_four, 1) == []


class Grouped:
    """Items whose bucket is index % 3 in even epochs and index % 2 in odd ones."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def group_key(self, index: int, epoch: int) -> int:
        return index % (3 if epoch % 2 == 0 else 2)


def test_a_batch_holds_one_bucket_and_batches_are_seeded():
    data = Grouped(20)
    batches = epoch_batches(data, 3, seed=0, epoch=0)
    assert len(batches) == 6  # buckets of 7, 7 and 6 items: 2 full batches of 3 each
    assert all(len(b) == 3 and len({data.group_key(i, 0) for i in b}) == 1 for b in batches)
    assert len({i for b in batches for i in b}) == 18  # no item twice (2 wait for another epoch)
    assert batches == epoch_batches(data, 3, seed=0, epoch=0) != epoch_batches(data, 3, seed=1, epoch=0)
    odd = epoch_batches(data, 3, seed=0, epoch=1)
    assert len(odd) == 6 and all(len({data.group_key(i, 1) for i in b}) == 1 for b in odd)


def test_the_plan_walks_epochs_of_varying_length():
    data = Grouped(20)
    plan = BatchPlan(data, 3, seed=0)
    expected = [(e, b) for e in range(4) for b in epoch_batches(data, 3, 0, e)]
    assert [plan.at(step) for step in range(len(expected))] == expected
    assert BatchPlan(data, 3, seed=0).at(len(expected) - 1) == expected[-1]  # a resumed run finds the same batch
    with pytest.raises(ConfigError, match="no bucket holds a full batch"):
        BatchPlan(data, 8, seed=0)
