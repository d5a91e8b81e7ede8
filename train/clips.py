"""Folder and JSONL clip data (data.frames > 1): (clip, caption) pairs of video files and frame
folders, in (frames, height, width) buckets (train/clip_buckets.py) or square center crops.

Captions are found as for images (train/images.py): in a folder, `clip.mp4` takes `clip.txt` and
the frame folder `clip/` takes `clip.txt` beside it; a JSONL manifest has one
{"video": path to a video file or frame folder, "caption": ...} object per line. Loose images of
a clip folder are not clips and are ignored.

Every clip is probed when the data set is built (no frame is decoded): clips that cannot be read,
whose frames differ in size, or that are shorter than any bucket are left out with a one-line
warning naming the file and the fix. An item's bucket, the start of its frames and its crop come
from `item_rng(seed, epoch, index)` (like images), so a batch can be grouped by bucket before any
clip is read, and a resumed or distributed run prepares each clip identically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .clip_buckets import Bucket, clip_buckets, nearest_buckets
from .config import ConfigError, TrainConfig, vae_temporal
from .images import center_square, item_rng, jsonl_items, resize_and_crop, to_tensor, unit_px
from .videos import VIDEO_EXTENSIONS, ClipError, ClipInfo, frame_indices, is_video_file, probe, read_frames, too_short

log = logging.getLogger("train.clips")


def folder_clips(folder: Path) -> list[tuple[Path, str]]:
    """(video file or frame folder, caption) pairs under `folder`, by name."""
    items, missing = [], 0
    for path in sorted(folder.rglob("*")):
        if is_video_file(path):
            caption_file = path.with_suffix(".txt")
        elif path.is_dir():
            caption_file = path.parent / f"{path.name}.txt"
            if not caption_file.is_file():
                continue  # a plain subfolder (it may hold clips itself), not a frame folder
        else:
            continue
        try:
            items.append((path, caption_file.read_text().strip()))
        except (OSError, UnicodeDecodeError):
            missing += 1
    if missing:
        log.warning("skipped %d video(s) without a readable same-name .txt caption in %s", missing, folder)
    return items


def jsonl_clips(manifest: Path) -> list[tuple[Path, str]]:
    """(path, caption) of every {"video": ..., "caption": ...} row of a JSONL manifest."""
    return jsonl_items(manifest, key="video")


MOTION_KEYS = ("motion_score", "unimatch_flow")  # ours, the official metadata's


def jsonl_motion_scores(manifest: Path) -> dict[Path, float]:
    """Lumina-Video motion scores of a JSONL manifest's rows that give one ("motion_score", or the
    official "unimatch_flow"), by clip path (resolved as jsonl_items resolves them)."""
    import json

    scores: dict[Path, float] = {}
    for line in manifest.read_text().splitlines():
        try:
            row = json.loads(line)
            key = next((k for k in MOTION_KEYS if k in row), None)
            if key is None:
                continue
            path = Path(row["video"])
            scores[path if path.is_absolute() else manifest.parent / path] = float(row[key])
        except (ValueError, KeyError, TypeError):
            continue  # jsonl_items reports malformed lines
    return scores


class CaptionedClips(Dataset):
    """(video or frame folder, caption) pairs → ((3, F, H, W) tensor in [-1, 1], caption).

    With `buckets` each clip gets one of the top_k nearest buckets, drawn per epoch; without, the
    first-`frames`-long run of its frames from a random start, square center crops of `side` px."""

    def __init__(self, items: list[tuple[Path, str]], *, frames: int, side: int, buckets: list[Bucket] | None = None,
                 top_k: int = 1, stride: int = 1, fps: float = 0.0, seed: int = 0, source: str | None = None) -> None:
        self.frames, self.side, self.buckets, self.top_k, self.seed = frames, side, buckets, top_k, seed
        self.source = source
        self.motion: dict[Path, float] = {}  # Lumina-Video motion scores by clip path (JSONL metadata)
        needed = min(f for f, _, _ in buckets) if buckets else frames
        self.clips: list[tuple[ClipInfo, list[int], str]] = []
        self.problems: dict[Path, str] = {}  # clips left out when probed
        for path, caption in items:
            try:
                info = probe(path)
                offered = frame_indices(info, stride, fps)
                if len(offered) < needed:
                    raise too_short(info, len(offered), needed, stride, fps)
            except ClipError as err:
                self.problems[path] = str(err)
                log.warning("skipping clip: %s", err)
                continue
            self.clips.append((info, offered, caption))
        self.unreadable: dict[int, str] = {}  # probed well but failed to decode
        if not self.clips:
            first = next(iter(self.problems.values()), "no clips found")
            raise ConfigError(f"data.path={source!r}: none of its {len(items)} clip(s) can be used (e.g. {first})")

    @property
    def skipped(self) -> int:
        """How many clips were left out so far (when probed or when decoded)."""
        return len(self.problems) + len(self.unreadable)

    @property
    def items(self) -> list[tuple[Path, str]]:
        """(path, caption) of every usable clip, what train/cache.py records."""
        return [(info.path, caption) for info, _, caption in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def _bucket(self, index: int, epoch: int) -> tuple[Bucket, np.random.Generator]:
        rng = item_rng(self.seed, epoch, index)
        info, offered, _ = self.clips[index]
        if not self.buckets:
            return (self.frames, self.side, self.side), rng
        candidates = nearest_buckets(len(offered), info.width, info.height, self.buckets, self.top_k)
        return candidates[int(rng.integers(len(candidates)))], rng

    def group_key(self, index: int, epoch: int) -> Bucket:
        """The (frames, width, height) the item has in `epoch`: a batch holds one of them."""
        return self._bucket(index, epoch)[0]

    def load(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, str] | None:
        if index in self.unreadable:
            return None
        (count, width, height), rng = self._bucket(index, epoch)
        info, offered, caption = self.clips[index]
        start = int(rng.integers(len(offered) - count + 1))  # trim the clip to the bucket's length
        try:
            frames = read_frames(info, offered[start : start + count])
        except ClipError as err:
            self.unreadable[index] = str(err)
            log.warning("skipping clip: %s; %d of %d skipped so far", err, self.skipped, len(self.clips) + len(self.problems))
            return None
        if self.buckets:
            # one crop for the whole clip: every frame has the source size, so the same seed draws the same offsets
            crop_seed = int(rng.integers(2**62))
            frames = [resize_and_crop(f, (width, height), np.random.default_rng(crop_seed)) for f in frames]
        else:
            frames = [center_square(f, self.side) for f in frames]
        return torch.stack([to_tensor(f) for f in frames], dim=1), caption

    def item(self, index: int, epoch: int) -> tuple[torch.Tensor, str]:
        """The clip, or when it fails to decode the next readable clip of the same bucket (a batch
        keeps one shape)."""
        key = self.group_key(index, epoch)
        for offset in range(len(self.clips)):
            other = (index + offset) % len(self.clips)
            if offset and self.group_key(other, epoch) != key:
                continue
            item = self.load(other, epoch)
            if item is not None:
                return item
        first = next(iter(self.unreadable.values()))
        raise ConfigError(f"data.path={self.source!r}: no clip of bucket {key} (frames, width, height) can be decoded "
                          f"(e.g. {first})")

    def __getitem__(self, index: int):
        return self.item(index, 0)

    def motion_score(self, index: int) -> float | None:
        """The clip's Lumina-Video motion score from its metadata, None when it has none."""
        return self.motion.get(self.clips[index][0].path)


def clip_items(config: TrainConfig) -> list[tuple[Path, str]]:
    """The (video or frame folder, caption) pairs of a folder or JSONL clip data set."""
    d = config.data
    items = folder_clips(Path(d.path)) if d.kind == "folder" else jsonl_clips(Path(d.path))
    if not items:
        if d.kind == "folder":
            raise ConfigError(f"data.path={d.path!r} holds no clip with a same-name .txt caption (data.frames={d.frames}); put "
                              f"videos ({' '.join(sorted(VIDEO_EXTENSIONS))}) or frame folders there with captions "
                              "(clip.mp4 + clip.txt, clip/ + clip.txt), or set data.frames=1 for images")
        raise ConfigError(f"data.path={d.path!r} lists no usable clip; give one JSON object per line, "
                          '{"video": "path/to/clip.mp4 or a frame folder", "caption": "..."}')
    return items


def dataset_buckets(config: TrainConfig) -> list[Bucket] | None:
    """The run's clip buckets (None when data.buckets is off)."""
    d, m = config.data, config.model
    if not d.buckets:
        return None
    return clip_buckets(d.image_size, d.frames, unit_px(m.patch_size, m.vae_downsample), min_frames=d.min_frames,
                        temporal=vae_temporal(d.vae), max_ratio=d.max_aspect_ratio)


def captioned_clips(config: TrainConfig) -> CaptionedClips:
    d = config.data
    clips = CaptionedClips(clip_items(config), frames=d.frames, side=d.image_size, buckets=dataset_buckets(config),
                           top_k=d.bucket_top_k, stride=d.frame_stride, fps=d.fps, seed=config.run.seed, source=d.path)
    if d.kind == "jsonl":
        clips.motion = jsonl_motion_scores(Path(d.path))
    return clips
