"""Procedural clips for frames models: one shape of train/shapes.py gliding across a plain
background, captioned with its motion, e.g. "a small red circle moving right on a white background".

The shape crosses the middle of the picture from 1/4 to 3/4 of the side along its direction
(perpendicular offset and speed jittered per item), one step per frame, so every frame differs and
the direction can only be read from the frame order. Deterministic given (seed, index).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from lumina.pixels import from_uint8

from .shapes import BACKGROUNDS, COLOURS, SHAPES, SIDE, SIZES, shape_coverage

DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def caption(colour: str, shape: str, size: str, direction: str, background: str) -> str:
    return f"a {size} {colour} {shape} moving {direction} on a {background} background"


Motion = tuple[str, str, str, str, str]  # (colour, shape, size, direction, background)


def all_motions() -> list[Motion]:
    """Every (colour, shape, size, direction, background), in a fixed order."""
    return list(itertools.product(COLOURS, SHAPES, SIZES, DIRECTIONS, BACKGROUNDS))


def split_motions(seed: int = 0, held_out_fraction: float = 0.15) -> tuple[list[Motion], list[Motion]]:
    """(train motions, held-out motions): held-out (colour, shape, size, direction) combinations
    occur in no training clip under any background. Deterministic in `seed`."""
    combos = sorted({m[:4] for m in all_motions()})
    order = np.random.default_rng([seed, 3]).permutation(len(combos))
    held = {combos[i] for i in order[: int(round(held_out_fraction * len(combos)))]}
    motions = all_motions()
    return [m for m in motions if m[:4] not in held], [m for m in motions if m[:4] in held]


def render_clip(motion: tuple[str, str, str, str, str], frames: int, size: int = 32,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 (frames, size, size, 3): the shape at evenly spaced positions along its direction."""
    colour, shape, kind, direction, background = motion
    dx, dy = DIRECTIONS[direction]
    offset, travel = (rng.uniform(-0.08, 0.08), rng.uniform(0.4, 0.6)) if rng is not None else (0.0, 0.5)
    side = SIDE[kind] * size
    fg = np.asarray(COLOURS[colour], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[background], dtype=np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        along = 0.5 - travel / 2 + travel * (f / max(1, frames - 1))  # 1/4 → 3/4 of the side at travel 1/2
        if dx:
            cx, cy = (along if dx > 0 else 1 - along) * size, (0.5 + offset) * size
        else:
            cx, cy = (0.5 + offset) * size, (along if dy > 0 else 1 - along) * size
        alpha = shape_coverage(shape, size, cx, cy, side)[..., None]
        out[f] = np.clip(np.rint(bg * (1 - alpha) + fg * alpha), 0, 255).astype(np.uint8)
    return out


class MovingShapesDataset(torch.utils.data.Dataset):
    """(clip (3, frames, size, size) float32 in [-1, 1], caption) over `motions` (default every
    motion; training runs pass `split_motions()[0]`), `repeats` times."""

    def __init__(self, frames: int, size: int = 32, repeats: int = 1, seed: int = 0,
                 motions: list[Motion] | None = None) -> None:
        self.motions = all_motions() if motions is None else list(motions)
        if not self.motions:
            raise ValueError("MovingShapesDataset needs at least one motion")
        self.frames, self.size, self.repeats, self.seed = int(frames), int(size), int(repeats), int(seed)

    def __len__(self) -> int:
        return len(self.motions) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        motion = self.motions[index % len(self.motions)]
        clip = render_clip(motion, self.frames, self.size, np.random.default_rng([self.seed, index]))
        return from_uint8(torch.from_numpy(clip)).permute(3, 0, 1, 2).contiguous(), caption(*motion)  # (3, F, H, W)

    def motion_score(self, index: int) -> float:
        """Item `index`'s Lumina-Video motion score (`motion_score`)."""
        motion = self.motions[index % len(self.motions)]
        return motion_score(motion, self.frames, self.size, np.random.default_rng([self.seed, index]))


def motion_score(motion: tuple[str, str, str, str, str], frames: int, size: int = 32,
                 rng: np.random.Generator | None = None) -> float:
    """The clip's score in the official measure (the mean absolute optical flow over both flow
    components and every pixel, tools/unimatch/compute.py), computed exactly instead of by a flow
    model: the shape's pixels move by its per-frame step along one axis, every other pixel stays.
    At this clip's own size and frame rate (the official measures at 320×576, frames 0.5 s apart);
    `rng` must be the one `render_clip` draws from (same order of draws)."""
    _, shape, kind, _, _ = motion
    travel = 0.5
    if rng is not None:
        rng.uniform(-0.08, 0.08)  # the perpendicular offset, drawn first by render_clip
        travel = rng.uniform(0.4, 0.6)
    step = travel * size / max(1, frames - 1)  # px per frame
    coverage = float(shape_coverage(shape, size, size / 2, size / 2, SIDE[kind] * size).mean())
    return step * coverage / 2  # one of the two flow components moves


def all_captions() -> list[str]:
    """Every moving-shapes caption (the vocabulary a tiny text encoder for them needs)."""
    return [caption(*motion) for motion in all_motions()]
