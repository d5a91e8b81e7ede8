"""Read moving-shape clips back by image statistics: what moved, which way, and whether it stayed
itself (train/moving_shapes.py draws them; a frames model is judged with this).

Per frame, `train.shapes.measure` gives colour, shape and size; the foreground's centroid is
tracked across frames, and the direction is the sign of the larger of the total horizontal and
vertical displacement (a shape that moves less than `MIN_TRAVEL` of the side has no direction).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .moving_shapes import DIRECTIONS, Motion
from .shapes import BACKGROUNDS, measure, to_uint8

MIN_TRAVEL = 0.1  # fraction of the side: below this the clip counts as still


def centroid(frame) -> tuple[float, float] | None:
    """(x, y) centre of the pixels far from the background colour, as fractions of the side."""
    img = to_uint8(frame).astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(img - bg, axis=-1)
    if float(dist.max()) < 40.0:
        return None
    weight = dist * (dist > max(40.0, 0.5 * float(dist.max())))
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]] + 0.5
    total = float(weight.sum())
    return float((weight * xs).sum()) / total / img.shape[1], float((weight * ys).sum()) / total / img.shape[0]


def direction(frames: Sequence) -> str | None:
    """"left" / "right" / "up" / "down" from the first to the last frame with a foreground, or None."""
    track = [c for c in (centroid(f) for f in frames) if c is not None]
    if len(track) < 2:
        return None
    dx, dy = track[-1][0] - track[0][0], track[-1][1] - track[0][1]
    if max(abs(dx), abs(dy)) < MIN_TRAVEL:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def frames_of(clip) -> list:
    """A clip as a list of frames: (F, H, W, 3) uint8, or (3, F, H, W) / (F, 3, H, W) float in [-1, 1]."""
    arr = clip.detach().float().cpu().numpy() if hasattr(clip, "detach") else np.asarray(clip)
    if arr.ndim != 4:
        raise ValueError(f"expected one clip with 4 dims, got shape {arr.shape}")
    if arr.shape[-1] == 3:
        return list(arr)
    if arr.shape[0] == 3 and arr.shape[1] != 3:
        arr = arr.transpose(1, 0, 2, 3)
    return list(arr)


def measure_clip(clip) -> dict[str, object]:
    """{"direction", "colour", "shape", "size", "background"}: the last four are the value every
    frame agrees on, or None when any frame disagrees (or shows nothing)."""
    frames = frames_of(clip)
    per_frame = [measure(f) for f in frames]
    out: dict[str, object] = {"direction": direction(frames)}
    for attribute in ("colour", "shape", "size", "background"):
        values = {m[attribute] for m in per_frame}
        out[attribute] = values.pop() if len(values) == 1 else None
    return out


def score_clips(clips: Iterable, motions: Sequence[Motion]) -> dict[str, float]:
    """Accuracy of the direction; of colour and shape right in every frame (each, and
    "colour_and_shape" both); of size constant and right; and "all" of these together, over clips
    asked to show `motions`."""
    keys = ("direction", "colour", "shape", "colour_and_shape", "size", "all")
    counts, n = dict.fromkeys(keys, 0), 0
    for clip, motion in zip(clips, motions, strict=True):
        colour, shape, size, move, background = motion
        if move not in DIRECTIONS or background not in BACKGROUNDS:
            raise ValueError(f"unknown motion {motion!r}")
        found = measure_clip(clip)
        right = {"direction": found["direction"] == move, "colour": found["colour"] == colour,
                 "shape": found["shape"] == shape, "size": found["size"] == size}
        for key, ok in right.items():
            counts[key] += int(ok)
        counts["colour_and_shape"] += int(right["colour"] and right["shape"])
        counts["all"] += int(all(right.values()))
        n += 1
    if n == 0:
        raise ValueError("score_clips needs at least one clip")
    return {k: v / n for k, v in counts.items()}
