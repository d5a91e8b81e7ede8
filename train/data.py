"""Training data: the built-in procedural shapes, an image folder with .txt captions, or a JSONL
manifest; folder/JSONL images in aspect-ratio buckets (train/images.py) or square center crops,
or read back from a cache (train/cache.py). Unreadable items are skipped with a counted warning,
never a crash mid-epoch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import TrainConfig
from .images import bucket_crop, bucket_sizes, center_square, item_rng, unit_px

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
log = logging.getLogger("train.data")


def to_tensor(image) -> torch.Tensor:
    """PIL / uint8 HWC → (3, H, W) float in [-1, 1], the official normalisation."""
    array = np.asarray(image, dtype=np.float32)[..., :3] / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class CaptionedImages(Dataset):
    """(image path, caption) pairs → ((3, H, W) tensor in [-1, 1], caption).

    With `sizes` (aspect-ratio buckets, train/images.py) each image gets a bucket crop drawn from
    (seed, epoch, index); without, the square center crop resized to `side`.
    """

    def __init__(self, items: list[tuple[Path, str]], side: int, sizes: list[tuple[int, int]] | None = None,
                 top_k: int = 1, seed: int = 0) -> None:
        self.items, self.side, self.skipped = items, side, 0
        self.sizes, self.top_k, self.seed = sizes, top_k, seed

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, str] | None:
        from PIL import Image

        path, caption = self.items[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if self.sizes:
                    img = bucket_crop(img, self.sizes, self.top_k, item_rng(self.seed, epoch, index))
                else:
                    img = center_square(img, self.side)
                return to_tensor(img), caption
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, counted
            self.skipped += 1
            log.warning("skipping unreadable image %s (%s); %d skipped so far", path, type(err).__name__, self.skipped)
            return None

    def item(self, index: int, epoch: int) -> tuple[torch.Tensor, str]:
        for offset in range(len(self.items)):  # a broken item is replaced by the next readable one
            item = self.load((index + offset) % len(self.items), epoch)
            if item is not None:
                return item
        raise RuntimeError("no readable image in the dataset")

    def __getitem__(self, index: int):
        return self.item(index, 0)


def folder_items(folder: Path) -> list[tuple[Path, str]]:
    items, missing = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        caption_file = path.with_suffix(".txt")
        if not caption_file.is_file():
            missing += 1
            continue
        items.append((path, caption_file.read_text().strip()))
    if missing:
        log.warning("skipped %d image(s) without a same-name .txt caption in %s", missing, folder)
    return items


def jsonl_items(manifest: Path) -> list[tuple[Path, str]]:
    items, bad = [], 0
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path = Path(row["image"])
            items.append((path if path.is_absolute() else manifest.parent / path, str(row["caption"])))
        except (ValueError, KeyError, TypeError):
            bad += 1
    if bad:
        log.warning("skipped %d malformed line(s) of %s (need {\"image\": ..., \"caption\": ...})", bad, manifest)
    return items


def image_items(config: TrainConfig) -> list[tuple[Path, str]]:
    """The (image path, caption) pairs of a folder or JSONL data set."""
    d = config.data
    items = folder_items(Path(d.path)) if d.kind == "folder" else jsonl_items(Path(d.path))
    if not items:
        raise ValueError(f"no usable (image, caption) pairs in {d.path}")
    return items


def captioned_images(config: TrainConfig) -> CaptionedImages:
    d, m = config.data, config.model
    sizes = bucket_sizes(d.image_size, unit_px(m.patch_size, m.vae_downsample), d.max_aspect_ratio) if d.buckets else None
    return CaptionedImages(image_items(config), d.image_size, sizes, d.bucket_top_k, config.run.seed)


def build_dataset(config: TrainConfig) -> Dataset:
    """The training items: (pixels (3, H, W) in [-1, 1], caption) pairs, or, when data.cache_dir is
    set, the cache's (train.latents.LatentDist, caption) pairs (a ConfigError if it does not match)."""
    d = config.data
    if d.cache_dir:
        from .cache import CachedItems

        return CachedItems.open(config)
    if d.kind == "shapes":
        from .shapes import ShapesDataset, split

        train_specs, _ = split(seed=config.run.seed)
        return ShapesDataset(train_specs, repeats=d.repeats, size=d.image_size, seed=config.run.seed)
    return captioned_images(config)


def variable_sizes(config: TrainConfig) -> bool:
    """Whether items of one batch may differ in size (bucketed folder/JSONL data)."""
    return config.data.kind in ("folder", "jsonl") and config.data.buckets


def load_batch(dataset: Dataset, ids: list[int], epoch: int) -> list:
    """One step's items; bucketed images draw their crop from (seed, epoch, index)."""
    item = getattr(dataset, "item", None)
    return [item(i, epoch) if item is not None else dataset[i] for i in ids]


def epoch_order(length: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches, so a run and
    its resumption see the same data in the same order."""
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [perm[i : i + batch] for i in range(0, length - batch + 1, batch)]
