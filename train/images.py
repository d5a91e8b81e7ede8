"""Folder and JSONL image data: (image, caption) pairs read from disk, unreadable items skipped
with a counted warning (never a crash mid-epoch), in aspect-ratio buckets or square center crops.

Aspect-ratio bucketing at a fixed token budget, as the official training prepares its images.
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

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lumina.buckets import crop_size_list
from lumina.pixels import from_uint8

from .config import ConfigError, TrainConfig

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


def variable_sizes(config: TrainConfig) -> bool:
    """Whether items of one batch may differ in size: bucketed folder/JSONL images (bucketed clips
    are batched by bucket, train.data.epoch_batches, so a batch of clips holds one shape)."""
    return config.data.kind in ("folder", "jsonl") and config.data.buckets and config.data.frames == 1


# -- reading the images ----------------------------------------------------------------------
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
log = logging.getLogger("train.images")


def to_tensor(image) -> torch.Tensor:
    """PIL image or uint8 (H, W, 3 or 4) array → (3, H, W) float32 in [-1, 1] (lumina.pixels)."""
    array = np.array(image)[..., :3]  # a writable copy: torch refuses to share read-only PIL buffers
    return from_uint8(torch.from_numpy(array)).permute(2, 0, 1).contiguous()


class CaptionedImages(Dataset):
    """(image path, caption) pairs → ((3, H, W) tensor in [-1, 1], caption).

    With `sizes` (aspect-ratio buckets, above) each image gets a bucket crop drawn from
    (seed, epoch, index); without, the square center crop resized to `side`.
    """

    def __init__(self, items: list[tuple[Path, str]], side: int, sizes: list[tuple[int, int]] | None = None,
                 top_k: int = 1, seed: int = 0, source: str | None = None) -> None:
        self.items, self.side = items, side
        self.sizes, self.top_k, self.seed = sizes, top_k, seed
        self.source = source  # data.path, for the error when nothing is readable
        # indices found unreadable: each is tried, warned about and counted once (a bad file is not
        # read again in later batches or epochs: its replacement is the next readable item anyway)
        self.unreadable: dict[int, str] = {}

    @property
    def skipped(self) -> int:
        """How many distinct files could not be read so far."""
        return len(self.unreadable)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, str] | None:
        from PIL import Image

        if index in self.unreadable:
            return None
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
            self.unreadable[index] = f"{type(err).__name__}: {err}"
            log.warning("skipping unreadable image %s (%s); %d of %d skipped so far", path, type(err).__name__,
                        self.skipped, len(self.items))
            return None

    def item(self, index: int, epoch: int) -> tuple[torch.Tensor, str]:
        for offset in range(len(self.items)):  # a broken item is replaced by the next readable one
            item = self.load((index + offset) % len(self.items), epoch)
            if item is not None:
                return item
        first = min(self.unreadable)
        raise ConfigError(f"data.path={self.source!r}: none of its {len(self.items)} image(s) can be read "
                          f"(e.g. {self.items[first][0]}: {self.unreadable[first]}); replace the corrupt files "
                          "(readable: .png .jpg .jpeg .webp .bmp)")

    def __getitem__(self, index: int):
        return self.item(index, 0)


def folder_items(folder: Path) -> list[tuple[Path, str]]:
    items, missing = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        caption_file = path.with_suffix(".txt")
        try:
            items.append((path, caption_file.read_text().strip()))
        except (OSError, UnicodeDecodeError):  # missing or unreadable caption
            missing += 1
    if missing:
        log.warning("skipped %d image(s) without a readable same-name .txt caption in %s", missing, folder)
    return items


def jsonl_items(manifest: Path, key: str = "image") -> list[tuple[Path, str]]:
    """(path, caption) of every {key: ..., "caption": ...} row; relative paths are the manifest's."""
    items, bad = [], 0
    try:
        lines = manifest.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data.path={str(manifest)!r} cannot be read as a JSONL manifest ({type(err).__name__}: {err})") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path = Path(row[key])
            items.append((path if path.is_absolute() else manifest.parent / path, str(row["caption"])))
        except (ValueError, KeyError, TypeError):
            bad += 1
    if bad:
        log.warning("skipped %d malformed line(s) of %s (need {\"%s\": ..., \"caption\": ...})", bad, manifest, key)
    return items


def image_items(config: TrainConfig) -> list[tuple[Path, str]]:
    """The (image path, caption) pairs of a folder or JSONL data set."""
    d = config.data
    items = folder_items(Path(d.path)) if d.kind == "folder" else jsonl_items(Path(d.path))
    if not items:
        if d.kind == "folder":
            raise ConfigError(f"data.path={d.path!r} holds no image with a same-name .txt caption; put images "
                              f"({' '.join(sorted(IMAGE_EXTENSIONS))}) and their captions (img.png + img.txt) there")
        raise ConfigError(f"data.path={d.path!r} lists no usable image; give one JSON object per line, "
                          '{"image": "path/to/img.png", "caption": "..."}')
    return items


def captioned_images(config: TrainConfig) -> CaptionedImages:
    d, m = config.data, config.model
    sizes = bucket_sizes(d.image_size, unit_px(m.patch_size, m.vae_downsample), d.max_aspect_ratio) if d.buckets else None
    return CaptionedImages(image_items(config), d.image_size, sizes, d.bucket_top_k, config.run.seed, source=d.path)
