"""benchmarks/rounds.py: the interleaved rounds every ours-against-a-peer benchmark times with."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from rounds import interleaved_rounds, paired_ratio  # noqa: E402


def recorder(calls: list[str], name: str, seconds: float = 0.0):
    def call() -> None:
        calls.append(name)
        time.sleep(seconds)

    return call


def test_rounds_alternate_which_side_runs_first():
    calls: list[str] = []
    mine, theirs = interleaved_rounds(recorder(calls, "ours"), recorder(calls, "peer"), 4)
    assert len(mine) == len(theirs) == 4
    assert calls == ["ours", "peer", "peer", "ours"] * 2


def test_min_seconds_adds_rounds_in_pairs_until_the_time_is_spent():
    calls: list[str] = []
    mine, theirs = interleaved_rounds(recorder(calls, "ours", 0.005), recorder(calls, "peer", 0.005), 3, min_seconds=0.2)
    assert len(mine) == len(theirs) > 3 and len(mine) % 2 == 0
    assert sum(mine) + sum(theirs) >= 0.2
    plain: list[str] = []
    assert len(interleaved_rounds(recorder(plain, "ours"), recorder(plain, "peer"), 3)[0]) == 3  # no time asked: no extra round


def test_paired_ratio_is_the_median_of_the_rounds_ratios():
    assert paired_ratio([1.0, 2.0, 9.0], [2.0, 2.0, 10.0]) == 0.9
