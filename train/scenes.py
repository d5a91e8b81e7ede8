"""Two-object scenes: one flat shape in each half of the picture, captioned with both,
e.g. "a red circle at the left and a blue square at the right on a white background".

The world of train/shapes.py (same colours, shapes, backgrounds, renderer and measurer) extended
to pairs, so that a model trained on both learns to place two things at once; that is what the
Regional Prompts node asks of it (one region per half). Both shapes are small (8 px at 32 px) and
sit on the middle row, jittered like single shapes; the two colours always differ.

Held-out split: ordered (left colour, left shape, right colour, right shape) quadruples, drawn once
from a seed; a held-out quadruple occurs in no training scene under any background. `measure_pair`
reads each half back with `train.shapes.measure`, and `score_pairs` gives per-half accuracies.
Everything is deterministic given a seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .shapes import BACKGROUNDS, CENTRES, COLOURS, JITTER, SHAPES, SIDE, SIZE_JITTER, Spec, measure, shape_coverage, to_tensor

SIDES = ("left", "right")


@dataclass(frozen=True, order=True)
class PairSpec:
    """What one two-object picture shows: (colour, shape) at the left and at the right."""

    left_colour: str
    left_shape: str
    right_colour: str
    right_shape: str
    background: str = "white"

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.left_colour, COLOURS, "left colour"), (self.right_colour, COLOURS, "right colour"),
            (self.left_shape, SHAPES, "left shape"), (self.right_shape, SHAPES, "right shape"),
            (self.background, BACKGROUNDS, "background"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        if self.left_colour == self.right_colour:
            raise ValueError(f"both shapes are {self.left_colour}: a scene's two colours must differ")

    @property
    def combination(self) -> tuple[str, str, str, str]:
        return (self.left_colour, self.left_shape, self.right_colour, self.right_shape)

    def half(self, side: str) -> Spec:
        """The single-shape spec of one half (small, at that side), as the regional prompts ask for it."""
        colour, shape = (self.left_colour, self.left_shape) if side == "left" else (self.right_colour, self.right_shape)
        return Spec(colour, shape, "small", side, self.background)

    def caption(self) -> str:
        return (f"a {self.left_colour} {self.left_shape} at the left and a {self.right_colour} {self.right_shape} "
                f"at the right on a {self.background} background")


def all_pairs() -> list[PairSpec]:
    """Every scene in a fixed order (30 ordered colour pairs × 9 shape pairs × 3 backgrounds)."""
    return [PairSpec(c1, s1, c2, s2, bg)
            for c1, c2 in itertools.permutations(COLOURS, 2) for s1, s2 in itertools.product(SHAPES, SHAPES)
            for bg in BACKGROUNDS]


def split_pairs(seed: int = 0, held_out_fraction: float = 0.15) -> tuple[list[PairSpec], list[PairSpec]]:
    """(train scenes, held-out scenes): held-out quadruples appear in no training scene, under any
    background. Deterministic in `seed`."""
    combos = sorted({p.combination for p in all_pairs()})
    order = np.random.default_rng([seed, 2]).permutation(len(combos))
    held = {combos[i] for i in order[: int(round(held_out_fraction * len(combos)))]}
    scenes = all_pairs()
    return [p for p in scenes if p.combination not in held], [p for p in scenes if p.combination in held]


def render_pair(pair: PairSpec, size: int = 32, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """uint8 (size, size, 3): the left shape centred in the left third's cell, the right one in the
    right third's, both small; with `rng`, each is jittered like `train.shapes.render`."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    img = np.broadcast_to(np.asarray(BACKGROUNDS[pair.background], dtype=np.float32), (size, size, 3)).copy()
    for col, (colour, shape) in ((0, (pair.left_colour, pair.left_shape)), (2, (pair.right_colour, pair.right_shape))):
        cx, cy, side = CENTRES["small"][col] * size, CENTRES["small"][1] * size, SIDE["small"] * size
        if rng is not None:
            jx, jy, js = rng.uniform(-1.0, 1.0, size=3)
            cx, cy, side = cx + jx * JITTER * size, cy + jy * JITTER * size, side * (1.0 + js * SIZE_JITTER)
        alpha = shape_coverage(shape, size, cx, cy, side)[..., None]
        img = img * (1.0 - alpha) + np.asarray(COLOURS[colour], dtype=np.float32) * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def halves(image) -> tuple:
    """(left half, right half) of a picture, split down the middle column ((H, W, 3) or (3, H, W))."""
    if image.shape[0] == 3 and image.shape[-1] != 3:
        w = image.shape[-1]
        return image[..., : w // 2], image[..., w // 2 :]
    w = image.shape[1]
    return image[:, : w // 2], image[:, w // 2 :]


def measure_pair(image) -> dict[str, dict[str, str | None]]:
    """{"left": measure(left half), "right": measure(right half)} (colour, shape, … per half)."""
    left, right = halves(image)
    return {"left": measure(left), "right": measure(right)}


def score_pairs(images: Iterable, pairs: Sequence[PairSpec]) -> dict[str, float]:
    """Accuracy of each half's colour and shape over all halves (left and right pooled), and
    "both": the share of pictures with all four right."""
    counts, n = {"colour": 0, "shape": 0, "both": 0}, 0
    for image, pair in zip(images, pairs, strict=True):
        found = measure_pair(image)
        right_all = True
        for side in SIDES:
            want = pair.half(side)
            for attribute in ("colour", "shape"):
                ok = found[side][attribute] == getattr(want, attribute)
                counts[attribute] += int(ok)
                right_all &= ok
        counts["both"] += int(right_all)
        n += 1
    if n == 0:
        raise ValueError("score_pairs needs at least one image")
    return {"colour": counts["colour"] / (2 * n), "shape": counts["shape"] / (2 * n), "both": counts["both"] / n}


class PairsDataset(torch.utils.data.Dataset):
    """(image (3, size, size) float32 in [-1, 1], caption) over `pairs` (default: the training
    split), `repeats` times; item i's jitter is drawn from (seed, i)."""

    def __init__(self, pairs: Sequence[PairSpec] | None = None, repeats: int = 1, size: int = 32, seed: int = 0) -> None:
        self.pairs = list(split_pairs()[0] if pairs is None else pairs)
        if not self.pairs:
            raise ValueError("PairsDataset needs at least one scene")
        self.repeats, self.size, self.seed = int(repeats), int(size), int(seed)

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        index = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(index)
        pair = self.pairs[index % len(self.pairs)]
        return to_tensor(render_pair(pair, self.size, np.random.default_rng([self.seed, index]))), pair.caption()


def all_captions() -> list[str]:
    """Every scene caption (for a text encoder's vocabulary)."""
    return [p.caption() for p in all_pairs()]
