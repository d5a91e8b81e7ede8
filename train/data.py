"""The items a run trains on: the built-in procedural shapes (train/shapes.py), two-object scenes
(train/scenes.py) and moving shapes (train/moving_shapes.py), an image folder with .txt captions or a JSONL manifest (train/images.py),
clips of videos and frame folders (train/clips.py), or a cache of any of those (train/cache.py);
and the seeded order in which they are drawn."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils.data import Dataset

from .cache import CachedItems
from .clips import captioned_clips
from .config import ConfigError, TrainConfig
from .images import captioned_images
from .moving_shapes import MovingShapesDataset, split_motions
from .scenes import PairsDataset, split_pairs
from .shapes import ShapesDataset, split


def build_dataset(config: TrainConfig) -> Dataset:
    """The training items: (pixels (3, H, W) or, with frames, (3, F, H, W) in [-1, 1], caption)
    pairs, or, when data.cache_dir is set, the cache's (train.latents.LatentDist, caption) pairs (a
    ConfigError if it does not match)."""
    d = config.data
    if d.sources:
        from .mixing import build_sources

        return build_sources(config, build_dataset)
    if d.cache_dir:
        return CachedItems.open(config)
    if d.kind == "shapes":
        train_specs, _ = split(seed=config.run.seed)
        return ShapesDataset(train_specs, repeats=d.repeats, size=d.image_size, seed=config.run.seed)
    if d.kind == "scenes":
        return PairsDataset(split_pairs(seed=config.run.seed)[0], repeats=d.repeats, size=d.image_size, seed=config.run.seed)
    if d.kind == "moving_shapes":
        return MovingShapesDataset(d.frames, size=d.image_size, repeats=d.repeats, seed=config.run.seed,
                                   motions=split_motions(seed=config.run.seed)[0])
    if d.frames > 1:
        return captioned_clips(config)
    return captioned_images(config)


def load_batch(dataset: Dataset, ids: list[int], epoch: int) -> list:
    """One step's items; bucketed images draw their crop from (seed, epoch, index)."""
    item = getattr(dataset, "item", None)
    return [item(i, epoch) if item is not None else dataset[i] for i in ids]


def _permutation(length: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def epoch_order(length: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches, so a run and
    its resumption see the same data in the same order."""
    perm = _permutation(length, seed, epoch)
    return [perm[i : i + batch] for i in range(0, length - batch + 1, batch)]


def epoch_batches(dataset: Dataset, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch. Data whose items differ in shape by bucket (clips: a
    `group_key(index, epoch)`) are grouped first: the seeded permutation is split by bucket, each
    bucket's items cut into full batches (the rest wait for a later epoch), and the batches put
    in a seeded order, so one batch holds one (frames, height, width) shape."""
    key = getattr(dataset, "group_key", None)
    if key is None:
        return epoch_order(len(dataset), batch, seed, epoch)
    groups: dict = defaultdict(list)
    for index in _permutation(len(dataset), seed, epoch):
        groups[key(index, epoch)].append(index)
    batches = [ids[i : i + batch] for ids in groups.values() for i in range(0, len(ids) - batch + 1, batch)]
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed * 100_003 + epoch + 7919)).tolist()
    return [batches[i] for i in order]


class BatchPlan:
    """step → (epoch, the step's global batch): fixed-size epochs, or grouped ones whose batch
    count varies by epoch (counted from epoch 0, so a resumed run finds the same batch)."""

    def __init__(self, dataset: Dataset, batch: int, seed: int) -> None:
        self.dataset, self.batch, self.seed = dataset, batch, seed
        self.counts: list[int] = []  # batches per epoch, as far as computed
        self.current: tuple[int, list[list[int]]] = (-1, [])
        if not hasattr(dataset, "group_key") and len(dataset) < batch:
            raise ConfigError(f"the data has {len(dataset)} usable item(s), fewer than one batch: set optim.batch_size "
                              f"(now {batch}) to at most {len(dataset)}, or add data")
        if self.epoch(0) == []:
            raise ConfigError(f"the data has {len(dataset)} usable item(s) but no bucket holds a full batch (a batch "
                              f"holds one (frames, height, width) shape): set optim.batch_size (now {batch}) lower, add "
                              "data, or fill fewer buckets with data.bucket_top_k=1 or data.buckets=false")

    def epoch(self, epoch: int) -> list[list[int]]:
        if self.current[0] != epoch:
            self.current = (epoch, epoch_batches(self.dataset, self.batch, self.seed, epoch))
        return self.current[1]

    def _count(self, epoch: int) -> int:
        if not hasattr(self.dataset, "group_key"):
            return len(self.dataset) // self.batch
        while len(self.counts) <= epoch:
            n = len(epoch_batches(self.dataset, self.batch, self.seed, len(self.counts)))
            if n == 0:
                raise ConfigError(f"epoch {len(self.counts)} draws no full batch of one bucket: set optim.batch_size "
                                  f"(now {self.batch}) lower, or data.bucket_top_k=1")
            self.counts.append(n)
        return self.counts[epoch]

    def at(self, step: int) -> tuple[int, list[int]]:
        """(epoch, global batch ids) of `step`."""
        epoch = 0
        if not hasattr(self.dataset, "group_key"):
            epoch, step = divmod(step, self._count(0))
        else:
            while step >= self._count(epoch):
                step -= self._count(epoch)
                epoch += 1
        return epoch, self.epoch(epoch)[step]


def dataset_captions(dataset: Dataset) -> list[str]:
    """Every item's caption without loading any image (for the start-up summary and the
    tokenizer check); procedural data list their distinct captions."""
    from .mixing import MixedDataset

    if isinstance(dataset, MixedDataset):
        return [c for source in dataset.datasets for c in dataset_captions(source)]
    if isinstance(dataset, CachedItems):
        return [dataset.texts[row["caption"]] for row in dataset.items]
    if isinstance(dataset, ShapesDataset):
        return [s.caption() for s in dataset.specs] * dataset.repeats
    if isinstance(dataset, PairsDataset):
        return [p.caption() for p in dataset.pairs] * dataset.repeats
    if isinstance(dataset, MovingShapesDataset):
        from .moving_shapes import caption

        return [caption(*m) for m in dataset.motions] * dataset.repeats
    return [caption for _, caption in dataset.items]  # CaptionedImages, CaptionedClips


def dataset_summary(dataset: Dataset, captions: list[str], frames: int) -> str:
    """'found 120 images (3 skipped) with 120 captions (37 distinct)': what a person checks first."""
    what = "clips" if frames > 1 else "images"
    skipped = getattr(dataset, "skipped", 0)
    named = sum(1 for c in captions if c.strip())
    return (f"found {len(dataset)} {what}{f' ({skipped} skipped)' if skipped else ''} with {named} captions "
            f"({len(set(c for c in captions if c.strip()))} distinct, {len(captions) - named} empty)")
