"""Procedurally drawn captioned shapes, a held-out split of attribute combinations, and evaluation.

A picture is one flat-coloured shape (circle, square or triangle) of one of two sizes, in one cell of
a 3×3 grid, on a plain background; its caption names all five attributes, e.g.
"a small red circle at the top left on a white background".

Combinations of (colour, shape, size, position) are split once, deterministically from a seed:
held-out combinations never occur in training under any background, so a model that draws them
right composes attributes rather than recalling pictures.

`measure` reads the attributes back from any picture by simple image statistics (background from
the border, foreground = largest connected blob of pixels far from it, colour = nearest palette
colour, position = bounding-box centre's cell, size = bounding-box extent, shape = which of the three
shapes, drawn with the blob's area and centroid, overlaps its soft coverage best); `score` turns that
into accuracies per attribute. On clean renders it recovers every attribute of every spec, and it
still reads the shape of slightly rotated, blurred or noisy renders (see tests/train/test_shapes.py),
so its errors on generated pictures are the model's.

Pure numpy (+ torch for the dataset); everything is deterministic given a seed.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from lumina import pixels

# Shape colours: saturated and far apart from one another and from every background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 220, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (150, 40, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Row-major 3×3 grid: index = 3 * row + col.
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)

# Geometry as fractions of the image side (at 32 px: small 8 px, large 14 px across).
SIDE = {"small": 8 / 32, "large": 14 / 32}
# Centre of the shape's bounding box along one axis, per grid index 0/1/2 and size: large shapes sit
# closer to the middle so that they stay inside the picture.
CENTRES = {"small": (6 / 32, 16 / 32, 26 / 32), "large": (9 / 32, 16 / 32, 23 / 32)}
JITTER = 1.5 / 32  # ± positional jitter (uniform, per axis)
SIZE_JITTER = 0.06  # ± relative jitter of the side
SUPERSAMPLE = 4  # anti-aliasing: coverage from SUPERSAMPLE² samples per pixel

# Measurement thresholds (fractions of the image side / of the bounding box).
POSITION_EDGES = (12.5 / 32, 19.5 / 32)  # between the small/large centres and the middle
SIZE_EDGE = 11 / 32  # soft extent between small (8 ± 0.5 px) and large (14 ± 0.8 px)
# Shape templates by area: a circle of side s covers π·s²/4, a square s², the triangle s²/2.
AREA_PER_SIDE2 = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
ATTRIBUTES = ("colour", "shape", "size", "position")


@dataclass(frozen=True, order=True)
class Spec:
    """What one picture shows."""

    colour: str
    shape: str
    size: str
    position: str
    background: str = "white"

    def __post_init__(self):
        for value, allowed, name in (
            (self.colour, COLOURS, "colour"), (self.shape, SHAPES, "shape"), (self.size, SIZES, "size"),
            (self.position, POSITIONS, "position"), (self.background, BACKGROUNDS, "background"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")

    @property
    def combination(self) -> tuple[str, str, str, str]:
        """(colour, shape, size, position): the unit the held-out split is drawn over."""
        return (self.colour, self.shape, self.size, self.position)

    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} at the {self.position} on a {self.background} background"


def all_specs() -> list[Spec]:
    """Every spec, in a fixed order (6 colours × 3 shapes × 2 sizes × 9 positions × 3 backgrounds)."""
    return [Spec(*t) for t in itertools.product(COLOURS, SHAPES, SIZES, POSITIONS, BACKGROUNDS)]


def split(seed: int = 0, held_out_fraction: float = 0.15) -> tuple[list[Spec], list[Spec]]:
    """(train specs, held-out specs): held-out (colour, shape, size, position) combinations appear
    in no training spec, under any background. Deterministic in `seed`."""
    combos = sorted({s.combination for s in all_specs()})
    n_held = int(round(held_out_fraction * len(combos)))
    order = np.random.default_rng(seed).permutation(len(combos))
    held = {combos[i] for i in order[:n_held]}
    specs = all_specs()
    return [s for s in specs if s.combination not in held], [s for s in specs if s.combination in held]


# ----------------------------------------------------------------------------------------------
# Rendering


def shape_coverage(shape: str, size: int, cx: float, cy: float, side: float, angle: float = 0.0,
                   width: int | None = None) -> np.ndarray:
    """Fraction of each pixel covered by `shape`, (size, width or size) float32, by supersampling;
    (cx, cy) is the centre of its bounding box in pixels, `angle` a rotation in degrees (0 in the
    dataset)."""
    ss, width = SUPERSAMPLE, width or size
    rows = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss  # sample positions in pixel units
    cols = (np.arange(width * ss, dtype=np.float32) + 0.5) / ss
    dx, dy = cols[None, :] - cx, rows[:, None] - cy
    a = np.deg2rad(angle)
    x, y = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
    h = side / 2
    if shape == "circle":
        inside = x * x + y * y <= h * h
    elif shape == "square":
        inside = (np.abs(x) <= h) & (np.abs(y) <= h)
    else:  # triangle pointing up, apex at the top centre, base at the bottom
        inside = (y <= h) & (y >= -h) & (np.abs(x) <= (y + h) / 2)
    return inside.reshape(size, ss, width, ss).mean(axis=(1, 3), dtype=np.float32)


def render(spec: Spec, size: int = 32, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """The picture of `spec` as uint8 (size, size, 3). With `rng` (a Generator or a seed) the
    position is jittered by up to ±1.5 px (at 32 px) per axis and the side by ±6%; without it the
    shape sits exactly at its cell's centre. Deterministic given the rng state."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    row, col = divmod(POSITIONS.index(spec.position), 3)
    cx = CENTRES[spec.size][col] * size
    cy = CENTRES[spec.size][row] * size
    side = SIDE[spec.size] * size
    if rng is not None:
        jx, jy, js = rng.uniform(-1.0, 1.0, size=3)
        cx += jx * JITTER * size
        cy += jy * JITTER * size
        side *= 1.0 + js * SIZE_JITTER
    alpha = shape_coverage(spec.shape, size, cx, cy, side)[..., None]
    fg = np.asarray(COLOURS[spec.colour], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32)
    img = bg * (1.0 - alpha) + fg * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [-1, 1] (lumina.pixels)."""
    return pixels.from_uint8(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))


def to_uint8(image) -> np.ndarray:
    """Any picture → uint8 (H, W, 3). uint8 arrays are taken as they are; float arrays/tensors are
    taken to be in [-1, 1] (the training range) and clipped; (3, H, W) is transposed."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected one picture (H, W, 3) or (3, H, W), got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype == np.uint8:
        return image
    return pixels.to_uint8(torch.from_numpy(image.astype(np.float32))).numpy()


class ShapesDataset(torch.utils.data.Dataset):
    """(image (3, size, size) float32 in [-1, 1], caption) pairs over `specs`.

    Item i shows specs[i % len(specs)] with a jitter drawn from (seed, i): the same index always
    gives the same picture, whatever the epoch, worker or order of access.
    """

    def __init__(self, specs: Sequence[Spec] | None = None, repeats: int = 16, size: int = 32,
                 seed: int = 0, jitter: bool = True):
        self.specs = list(split()[0] if specs is None else specs)
        if not self.specs:
            raise ValueError("ShapesDataset needs at least one spec")
        self.repeats = int(repeats)
        self.size = int(size)
        self.seed = int(seed)
        self.jitter = bool(jitter)

    def __len__(self) -> int:
        return len(self.specs) * self.repeats

    def spec(self, index: int) -> Spec:
        return self.specs[index % len(self.specs)]

    def image(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index]) if self.jitter else None
        return render(self.spec(index), self.size, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        index = int(index)
        if index < 0:
            index += len(self)
        return to_tensor(self.image(index)), self.spec(index).caption()


# ----------------------------------------------------------------------------------------------
# Evaluation


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty if the mask is)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best, best_size, label = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        label += 1
        labels[y0, x0] = label
        queue, n = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            n += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                        labels[yy, xx] = label
                        queue.append((yy, xx))
        if n > best_size:
            best, best_size = label, n
    return labels == best if best else np.zeros_like(mask)


def _nearest(value: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    d = np.linalg.norm(np.asarray([palette[n] for n in names], dtype=np.float32) - value[None], axis=1)
    return names[int(np.argmin(d))]


def measure(image) -> dict[str, str | None]:
    """The attributes a picture shows, read by image statistics: keys colour, shape, size, position,
    background (None where there is no foreground). Accepts uint8 (H, W, 3) or float in [-1, 1],
    (H, W, 3) or (3, H, W), numpy or torch."""
    img = to_uint8(image).astype(np.float32)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(img - bg, axis=-1)
    out: dict[str, str | None] = {
        "background": _nearest(bg, BACKGROUNDS), "colour": None, "shape": None, "size": None, "position": None,
    }
    dmax = float(dist.max())
    if dmax < 40.0:
        return out
    # Half the strongest contrast: an anti-aliased edge pixel counts when at least half covered.
    fg = _largest_component(dist > max(40.0, 0.5 * dmax))
    ys, xs = np.nonzero(fg)
    if len(ys) == 0:
        return out
    full = float(np.percentile(dist[fg], 90))  # contrast of a fully covered pixel, robust to outliers
    core = fg & (dist >= 0.8 * full)  # fully covered pixels, free of edge blending
    out["colour"] = _nearest(img[core].mean(axis=0), COLOURS)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
    col = int(np.searchsorted(POSITION_EDGES, cx))
    row = int(np.searchsorted(POSITION_EDGES, cy))
    out["position"] = POSITIONS[3 * row + col]
    # Soft coverage around the blob (grown by one pixel to take in its anti-aliased rim): area =
    # summed coverage, width/height = summed per-column/row peak coverage. Far steadier than pixel
    # counts for 8-px shapes, whose thresholded outline swings by a pixel with sub-pixel jitter.
    grown = np.pad(fg, 1)
    grown = np.logical_or.reduce([grown[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    alpha = np.clip(dist / full, 0.0, 1.0) * grown
    bw, bh = float(alpha.max(axis=0).sum()), float(alpha.max(axis=1).sum())
    out["size"] = "large" if max(bw / w, bh / h) > SIZE_EDGE else "small"
    out["shape"] = _best_matching_shape(alpha)
    return out


def _best_matching_shape(alpha: np.ndarray) -> str:
    """The shape whose template, with the blob's area and centroid, has the highest soft IoU with
    the blob's coverage. Unlike the bounding box's fill ratio, this is robust to the wobbly edges
    and slight tilts of generated shapes (a square tilted by 8° fills only ~80 % of its box)."""
    height, width = alpha.shape
    area = float(alpha.sum())
    ys, xs = np.mgrid[:height, :width] + 0.5
    mx, my = float((alpha * xs).sum()) / area, float((alpha * ys).sum()) / area
    best, best_iou = "circle", -1.0
    for shape, per_side2 in AREA_PER_SIDE2.items():
        side = float(np.sqrt(area / per_side2))
        cy = my - side / 6 if shape == "triangle" else my  # a triangle's centroid is h/6 below its box centre
        template = shape_coverage(shape, height, mx, cy, side, width=width)
        iou = float(np.minimum(alpha, template).sum() / np.maximum(alpha, template).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def score(images: Iterable, specs: Sequence[Spec]) -> dict[str, float]:
    """Accuracy per attribute (colour, shape, size, position) and "all" (all four right) of
    `images` against the `specs` they were asked to show. `images` may be a batch tensor
    (N, 3, H, W) in [-1, 1] or any iterable of pictures `measure` accepts."""
    specs = list(specs)
    counts = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    n = 0
    for image, spec in zip(images, specs, strict=True):
        m = measure(image)
        right = [m[a] == getattr(spec, a) for a in ATTRIBUTES]
        for a, r in zip(ATTRIBUTES, right):
            counts[a] += int(r)
        counts["all"] += int(all(right))
        n += 1
    if n == 0:
        raise ValueError("score needs at least one image")
    return {k: v / n for k, v in counts.items()}
