"""The items a run trains on: the built-in procedural shapes (train/shapes.py), an image folder with
.txt captions or a JSONL manifest (train/images.py), or a cache of either (train/cache.py); and
the seeded order in which they are drawn."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .cache import CachedItems
from .config import TrainConfig
from .images import captioned_images
from .shapes import ShapesDataset, split


def build_dataset(config: TrainConfig) -> Dataset:
    """The training items: (pixels (3, H, W) in [-1, 1], caption) pairs, or, when data.cache_dir is
    set, the cache's (train.latents.LatentDist, caption) pairs (a ConfigError if it does not match)."""
    d = config.data
    if d.cache_dir:
        return CachedItems.open(config)
    if d.kind == "shapes":
        train_specs, _ = split(seed=config.run.seed)
        return ShapesDataset(train_specs, repeats=d.repeats, size=d.image_size, seed=config.run.seed)
    return captioned_images(config)


def load_batch(dataset: Dataset, ids: list[int], epoch: int) -> list:
    """One step's items; bucketed images draw their crop from (seed, epoch, index)."""
    item = getattr(dataset, "item", None)
    return [item(i, epoch) if item is not None else dataset[i] for i in ids]


def epoch_order(length: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches, so a run and
    its resumption see the same data in the same order."""
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [perm[i : i + batch] for i in range(0, length - batch + 1, batch)]
