"""Aspect-ratio bucketing at a fixed token budget, as the official training prepares its images.

The buckets are `lumina.buckets.crop_size_list`: every (width, height) in px, multiples of the unit
(model.patch_size × model.vae_downsample), whose patch grid holds at most (image_size / unit)²
patches, is maximal for its shape and has an aspect ratio ≤ data.max_aspect_ratio. Each image
gets one of the k buckets whose shape matches its own best (k = data.bucket_top_k; the official
uses 4), chosen at random; it is halved with a BOX filter while it is at least twice too big on
both sides, resized with BICUBIC so that it just covers the bucket, and randomly cropped to it.

All randomness comes from `item_rng(seed, epoch, index)`, so a run, its resumption and every
process of a distributed run prepare the same item identically, and a new epoch draws anew.
"""

from __future__ import annotations

import numpy as np

from lumina.buckets import crop_size_list

Size = tuple[int, int]  # (width, height) in px


def unit_px(patch_size: int, vae_downsample: int) -> int:
    """The side in px of one transformer token: bucket sides are multiples of it."""
    return patch_size * vae_downsample


def bucket_sizes(image_size: int, unit: int, max_ratio: float = 4.0) -> list[Size]:
    """The crop sizes for a budget of (image_size / unit)² tokens (image_size = the square side)."""
    return crop_size_list((image_size // unit) ** 2, unit, max_ratio)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream that prepares item `index` in `epoch` of a run seeded `seed`."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def aspect_match(width: int, height: int, crop: Size) -> float:
    """1 when the crop has the image's aspect ratio, smaller the more the crop would cut off."""
    sw, sh = crop[0] / width, crop[1] / height
    return min(sw, sh) / max(sw, sh)


def best_sizes(width: int, height: int, sizes: list[Size], k: int) -> list[Size]:
    """The k crop sizes that match the image's shape best, best first (ties keep the list's order)."""
    return sorted(sizes, key=lambda crop: -aspect_match(width, height, crop))[:k]


def choose_size(width: int, height: int, sizes: list[Size], k: int, rng: np.random.Generator) -> Size:
    """One of the k best-matching crop sizes, uniformly at random."""
    candidates = best_sizes(width, height, sizes, k)
    return candidates[int(rng.integers(len(candidates)))]


def resize_and_crop(image, crop: Size, rng: np.random.Generator):
    """BOX-halve while ≥ 2× too big on both sides, BICUBIC-resize to cover `crop`, random crop."""
    from PIL import Image

    cw, ch = crop
    while image.width >= 2 * cw and image.height >= 2 * ch:
        image = image.resize((image.width // 2, image.height // 2), Image.BOX)
    scale = max(cw / image.width, ch / image.height)
    size = (max(cw, round(image.width * scale)), max(ch, round(image.height * scale)))
    image = image.resize(size, Image.BICUBIC)  # PIL returns a copy when the size already fits
    left = int(rng.integers(image.width - cw + 1))
    top = int(rng.integers(image.height - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def bucket_crop(image, sizes: list[Size], k: int, rng: np.random.Generator):
    """An RGB PIL image → its bucket crop (a PIL image of one of `sizes`)."""
    crop = choose_size(image.width, image.height, sizes, k, rng)
    return resize_and_crop(image, crop, rng)


def center_square(image, side: int):
    """The square center crop resized to `side` (data.buckets: false)."""
    from PIL import Image

    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return image.resize((side, side), Image.BICUBIC)
