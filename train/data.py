"""Training data: the built-in procedural shapes, an image folder with .txt captions, or a JSONL
manifest. Unreadable items are skipped with a counted warning, never a crash mid-epoch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import TrainConfig

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
log = logging.getLogger("train.data")


def to_tensor(image) -> torch.Tensor:
    """PIL / uint8 HWC → (3, H, W) float in [-1, 1], the official normalisation."""
    array = np.asarray(image, dtype=np.float32)[..., :3] / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class CaptionedImages(Dataset):
    """(image path, caption) pairs, center-cropped and resized to a square side."""

    def __init__(self, items: list[tuple[Path, str]], side: int) -> None:
        self.items, self.side, self.skipped = items, side, 0

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[torch.Tensor, str] | None:
        from PIL import Image

        path, caption = self.items[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                s = min(w, h)
                img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                img = img.resize((self.side, self.side), Image.BICUBIC)
                return to_tensor(img), caption
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, counted
            self.skipped += 1
            log.warning("skipping unreadable image %s (%s); %d skipped so far", path, type(err).__name__, self.skipped)
            return None

    def __getitem__(self, index: int):
        for offset in range(len(self.items)):  # a broken item is replaced by the next readable one
            item = self.load((index + offset) % len(self.items))
            if item is not None:
                return item
        raise RuntimeError("no readable image in the dataset")


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


def build_dataset(config: TrainConfig) -> Dataset:
    d = config.data
    if d.kind == "shapes":
        from .shapes import ShapesDataset, split

        train_specs, _ = split(seed=config.run.seed)
        return ShapesDataset(train_specs, repeats=d.repeats, size=d.image_size, seed=config.run.seed)
    items = folder_items(Path(d.path)) if d.kind == "folder" else jsonl_items(Path(d.path))
    if not items:
        raise ValueError(f"no usable (image, caption) pairs in {d.path}")
    return CaptionedImages(items, d.image_size)


def epoch_order(length: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches, so a run and
    its resumption see the same data in the same order."""
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [perm[i : i + batch] for i in range(0, length - batch + 1, batch)]
