"""The official aspect-ratio buckets (`imgproc.py: generate_crop_size_list`)."""

from __future__ import annotations


def crop_size_list(num_patches: int, patch_px: int = 16, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """(width, height) pairs in px whose patch grids hold at most num_patches patches and are
    maximal for their shape, with aspect ratio ≤ max_ratio; walked from wide to tall."""
    sizes = []
    wp, hp = num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch_px, hp * patch_px))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def official_buckets(image_size: int = 1024) -> list[tuple[int, int]]:
    """Training buckets for a base resolution: (image_size/16)² patches of 16 px, ratio ≤ 4."""
    return crop_size_list((image_size // 16) ** 2, 16, 4.0)
