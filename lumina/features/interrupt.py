"""Stopping a long forward between transformer blocks: at 1024² on a CPU one model call takes
minutes, so a check between sampling steps alone leaves a cancel waiting that long."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..model.hooks import ForwardFeature, ForwardHook, ForwardInfo


@dataclass(frozen=True)
class InterruptCheck(ForwardFeature, ForwardHook):
    """`check()` runs before every block of every forward; it stops the run by raising (ComfyUI's
    `throw_exception_if_processing_interrupted` does)."""

    check: Callable[[], None]

    def begin(self, info: ForwardInfo) -> "InterruptCheck":
        return self

    def before_block(self, layer: int) -> None:
        self.check()
