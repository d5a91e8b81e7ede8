"""Buckets for clips: (frames, width, height) shapes at one token budget.

A clip of F pixel frames of W × H px becomes latent_frames(F) / f_patch × W/unit × H/unit tokens
(unit = patch_size × vae_downsample; latent_frames(F) = F in pixel space or through an image VAE,
k + 1 for F = 4k + 1 through the CogVideoX VAE; f_patch = 1 for Next-DiT and Flag-DiT, which
patchify each frame alone). The budget is that of the longest clip at the square side image_size:
latent_frames(frames) / f_patch × (image_size / unit)² tokens.

The bucket set holds, for every admissible frame count F from min_frames to frames, the image
buckets (`lumina.buckets.crop_size_list`, aspect ratio ≤ max_ratio) of the tokens one frame may
use: budget // (latent_frames(F) / f_patch). Shorter clips therefore trade length for resolution
and every bucket stays within the budget. A clip is assigned the longest frame count it can fill
(it is trimmed to it) and among that count's sizes one of the k whose aspect ratio matches the
frames best (train/images.py's rule for images); a batch then holds clips of one bucket.
"""

from __future__ import annotations

from lumina.buckets import crop_size_list

from .config import latent_frame_count
from .images import best_sizes

Bucket = tuple[int, int, int]  # (pixel frames, width px, height px)


def frame_counts(frames: int, min_frames: int, temporal: int = 1, f_patch: int = 1) -> list[int]:
    """The admissible pixel frame counts from min_frames to frames, longest first: 4k + 1 through a
    temporal VAE (temporal > 1), and latent frame counts divisible by f_patch."""
    counts = []
    for count in range(frames, max(1, min_frames) - 1, -1):
        if temporal > 1 and (count - 1) % temporal:
            continue
        if latent_frame_count(count, temporal) % f_patch:
            continue
        counts.append(count)
    return counts


def clip_tokens(bucket: Bucket, unit: int, temporal: int = 1, f_patch: int = 1) -> int:
    """The tokens a clip of this bucket becomes: latent frames / f_patch × columns × rows."""
    frames, width, height = bucket
    return latent_frame_count(frames, temporal) // f_patch * (width // unit) * (height // unit)


def token_budget(image_size: int, frames: int, unit: int, temporal: int = 1, f_patch: int = 1) -> int:
    """latent_frames(frames) / f_patch × (image_size / unit)²: the longest clip at the square side."""
    return clip_tokens((frames, image_size, image_size), unit, temporal, f_patch)


def clip_buckets(image_size: int, frames: int, unit: int, *, min_frames: int = 0, temporal: int = 1, f_patch: int = 1,
                 max_ratio: float = 4.0) -> list[Bucket]:
    """Every bucket (frames, width, height) within the budget, longest clips first."""
    budget = token_budget(image_size, frames, unit, temporal, f_patch)
    buckets = []
    for count in frame_counts(frames, min_frames or frames, temporal, f_patch):
        per_frame = budget // (latent_frame_count(count, temporal) // f_patch)
        buckets += [(count, w, h) for w, h in crop_size_list(per_frame, unit, max_ratio)]
    return buckets


def nearest_buckets(available: int, width: int, height: int, buckets: list[Bucket], k: int) -> list[Bucket]:
    """The k buckets nearest a clip of `available` frames of width × height: the longest frame count
    it can fill, then the k sizes whose aspect ratio matches best (best first); [] when the clip is
    shorter than every bucket."""
    counts = [f for f, _, _ in buckets if f <= available]
    if not counts:
        return []
    count = max(counts)
    sizes = [(w, h) for f, w, h in buckets if f == count]
    return [(count, w, h) for w, h in best_sizes(width, height, sizes, k)]


__all__ = ["Bucket", "clip_buckets", "clip_tokens", "frame_counts", "nearest_buckets", "token_budget"]
