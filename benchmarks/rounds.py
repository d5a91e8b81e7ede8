"""Interleaved timing rounds for the benchmarks that set our code against a peer in one run."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_rounds(
    ours: Callable[[], object], peer: Callable[[], object], repeats: int, min_seconds: float = 0.0
) -> tuple[list[float], list[float]]:
    """(our times, the peer's times), one call each per round, the order alternating (ours first in
    even rounds, the peer first in odd ones) so that neither always runs second. At least `repeats`
    rounds, and more (an even count) until the rounds took `min_seconds`: a cheap case gets the
    rounds it needs for a steady median on a shared machine."""
    mine: list[float] = []
    theirs: list[float] = []
    start = time.perf_counter()

    def another(i: int) -> bool:
        if i < repeats:
            return True
        short = time.perf_counter() - start < min_seconds
        return short if i == repeats else short or i % 2 == 1  # extra rounds come in pairs

    i = 0
    while another(i):
        if i % 2:
            theirs.append(timed(peer))
            mine.append(timed(ours))
        else:
            mine.append(timed(ours))
            theirs.append(timed(peer))
        i += 1
    return mine, theirs


def paired_ratio(mine: list[float], theirs: list[float]) -> float:
    """The median over rounds of ours / peer within a round: the two calls of a round share the
    machine's load of that moment, which drifts on a shared machine."""
    return statistics.median(a / b for a, b in zip(mine, theirs))
