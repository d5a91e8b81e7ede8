"""Errors a user can act on: each names the file or argument, the model family and the fix."""

from __future__ import annotations

from typing import Iterable

from .families import FAMILY_NAMES


class LuminaError(ValueError):
    """Base class for every input error raised by the library."""


class LuminaCheckpointError(LuminaError):
    """A file or state dict that cannot be loaded as a Lumina model."""

    def __init__(
        self,
        problem: str,
        *,
        source: str = "state dict",
        family: str | None = None,
        keys: Iterable[str] = (),
        hint: str | None = None,
    ) -> None:
        self.problem, self.source, self.family = problem, source, family
        self.keys = list(keys)
        lines = [f"Cannot load Lumina checkpoint {source}: {problem}."]
        lines.append(f"Model family guessed: {FAMILY_NAMES.get(family, 'none') if family else 'none'}.")
        if self.keys:
            shown = ", ".join(self.keys[:5]) + (f" … ({len(self.keys)} in all)" if len(self.keys) > 5 else "")
            lines.append(f"Offending keys: {shown}.")
        if hint:
            lines.append(f"Fix: {hint}.")
        super().__init__(" ".join(lines))


class LuminaInputError(LuminaError):
    """A tensor passed to the model that does not fit it (shape, channels, caption width)."""


class LuminaNumericError(LuminaError):
    """A computation that produced NaN or infinite values from finite inputs."""
