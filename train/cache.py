"""An on-disk cache of the training data: `python -m train cache --config run.yaml` encodes every
item once, and `fit` then trains from the cache without the VAE and without re-encoding captions.

Layout of data.cache_dir:
- `shard-00000.safetensors`, …: per cached item k the scaled VAE latent distribution
  (`{k}.mean`, `{k}.std`, fp32; every step still draws a fresh sample from it, as the official
  training does) or, in pixel space, the crop itself (`{k}.pixels`, uint8 (3, H, W), exactly the
  [-1, 1] tensor it came from); a clip (data.frames > 1) is stored under `clip.{k}.*` instead,
  (C, F, h, w) latents or uint8 (3, F, H, W) frames, so image and clip entries never share a key
  (the CogVideoX VAE gives exact latents: `clip.{k}.mean` without a std); per distinct caption j its text-encoder features
  (`caption.{j}`, fp32 (tokens, dim), unpadded, the mask being all ones). The empty caption of
  caption dropout is caption 0.
- `manifest.json`, written last (a half-built cache is never used): the config values the cache
  depends on (`match`), the latent space, the captions, and per item its source image, caption
  and the crop size it got (clips: their frame count, and a JSONL row's Lumina-Video motion score).

Trade-off: caching freezes one crop per item, the one epoch 0 draws (with run.seed), whereas
online training picks a bucket among the top data.bucket_top_k and a crop offset anew each epoch.
Training from the cache equals training online during epoch 0 and repeats those crops after it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from lumina.pixels import from_uint8, to_uint8
from lumina.text_encoders import load_text_encoder

from .caption_check import dataset_report, quiet_tokenizer
from .config import ConfigError, TrainConfig, validate, vae_temporal
from .clips import captioned_clips
from .images import captioned_images, unit_px
from .latents import LatentDist, VAESpace, VideoVAESpace

log = logging.getLogger("train.cache")
FORMAT, VERSION = "lumina-train-cache", 1
SHARD_ITEMS = 256  # items per shard file (SDXL latents at 1024² px: about 128 MB of mean + std)
CHUNK = 16  # images encoded together
REBUILD = "rebuild the cache for this config with `python -m train cache --config run.yaml`"
KEY_NAMES = {"unit": "model.patch_size × model.vae_downsample"}
# what caches built before clips existed were built with (their manifests lack these keys)
LEGACY = {"data.frames": 1, "data.min_frames": None, "data.frame_stride": None, "data.fps": None}


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def match_keys(config: TrainConfig) -> dict[str, Any]:
    """The config values a cache depends on: it is used only when all of them are the same."""
    d, m, t = config.data, config.model, config.text
    return {
        "data.kind": d.kind, "data.path": _resolved(d.path), "data.image_size": d.image_size,
        "unit": unit_px(m.patch_size, m.vae_downsample), "data.buckets": d.buckets,
        "data.bucket_top_k": d.bucket_top_k if d.buckets else None,
        "data.max_aspect_ratio": float(d.max_aspect_ratio) if d.buckets else None,
        "data.vae": _resolved(d.vae), "text.encoder": _resolved(t.encoder), "text.convention": t.convention,
        "data.frames": d.frames, "data.min_frames": d.min_frames if d.frames > 1 and d.buckets else None,
        "data.frame_stride": d.frame_stride if d.frames > 1 else None, "data.fps": float(d.fps) if d.frames > 1 else None,
    }


def build_cache(config: TrainConfig) -> Path:
    """Encode every readable item of the folder/JSONL data set into data.cache_dir; returns it.

    Unreadable images are skipped with a counted warning (they are left out of the cache)."""
    validate(config)
    d = config.data
    if not d.cache_dir:
        raise ConfigError("data.cache_dir is not set; give the folder the cache is written to")
    root = Path(d.cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)  # the old cache is invalid from here on
    for old in root.glob("shard-*.safetensors"):
        old.unlink()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    clips = d.frames > 1
    dataset = captioned_clips(config) if clips else captioned_images(config)
    space = None
    if config.model.vae_downsample > 1:
        space = VideoVAESpace(d.vae, device) if vae_temporal(d.vae) > 1 else VAESpace(d.vae, device)
    prefix = "clip." if clips else ""  # image and clip entries never share a key
    encoder = load_text_encoder(config.text.encoder, dtype=torch.float32, device=device, convention=config.text.convention)
    problem = dataset_report(encoder, [caption for _, caption in dataset.items], f"data captions ({d.path})")
    if problem:  # once for the whole caption set, not once per chunk
        log.warning("%s", problem)

    captions: dict[str, int] = {}
    caption_rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    shards: list[str] = []
    tensors: dict[str, torch.Tensor] = {}
    in_shard = 0

    def flush() -> None:
        nonlocal tensors, in_shard
        if tensors:
            name = f"shard-{len(shards):05d}.safetensors"
            save_file(tensors, str(root / name))
            shards.append(name)
        tensors, in_shard = {}, 0

    def add_captions(texts: list[str]) -> None:
        new = [c for c in dict.fromkeys(texts) if c not in captions]
        if not new:
            return
        with quiet_tokenizer():  # reported above
            enc = encoder.encode(new)
        for i, caption in enumerate(new):
            n = int(enc.cap_mask[i].sum())
            captions[caption] = len(caption_rows)
            tensors[f"caption.{len(caption_rows)}"] = enc.cap_feats[i, :n].float().cpu().contiguous()
            caption_rows.append({"text": caption, "shard": len(shards)})

    add_captions([""])  # caption dropout's empty caption
    for start in range(0, len(dataset), CHUNK):
        loaded = []
        for index in range(start, min(start + CHUNK, len(dataset))):
            item = dataset.load(index, epoch=0)  # a counted warning and None when unreadable
            if item is not None:
                loaded.append((index, *item))
        if not loaded:
            continue
        add_captions([caption for _, _, caption in loaded])
        dists = space.encode([image for _, image, _ in loaded]) if space else None
        for j, (index, image, caption) in enumerate(loaded):
            k = len(items)
            if dists is None:
                tensors[f"{prefix}{k}.pixels"] = to_uint8(image).contiguous()
            else:
                tensors[f"{prefix}{k}.mean"] = dists[j].mean.float().cpu().contiguous()
                if dists[j].std is not None:
                    tensors[f"{prefix}{k}.std"] = dists[j].std.float().cpu().contiguous()
            path, _ = dataset.items[index]
            row = {"image": str(path), "caption": captions[caption], "crop": [image.shape[-1], image.shape[-2]], "shard": len(shards)}
            if clips:
                row["frames"] = image.shape[1]
            motion = getattr(dataset, "motion_score", None)
            if motion is not None and motion(index) is not None:  # a JSONL clip's Lumina-Video motion score
                row["motion"] = float(motion(index))
            items.append(row)
            in_shard += 1
        if in_shard >= SHARD_ITEMS:
            flush()
        log.info("cached %d of %d items", len(items), len(dataset))
    flush()
    if not items:
        what = "clip(s)" if clips else "image(s)"
        raise ConfigError(f"data.path={d.path!r}: none of its {len(dataset)} {what} can be read; nothing was cached. "
                          "Replace the corrupt files (see the warnings above)")
    if dataset.skipped:
        log.warning("left %d unreadable %s out of the cache", dataset.skipped, "clip(s)" if clips else "image(s)")
    latent = ({"space": "pixels", "channels": 3, "downsample": 1} if space is None else
              {"space": "vae", "channels": space.channels, "downsample": space.downsample, "scale": space.scale, "shift": space.shift})
    if isinstance(space, VideoVAESpace):  # the posterior's mode, no std stored
        latent.update(temporal=space.video.temporal_factor, exact=True)
    manifest = {"format": FORMAT, "version": VERSION, "match": match_keys(config), "latent": latent, "skipped": dataset.skipped,
                "shards": shards, "captions": caption_rows, "items": items}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, root / "manifest.json")
    log.info("cache of %d items (%d captions, %d skipped) in %s", len(items), len(caption_rows), dataset.skipped, root)
    return root


class _Shards:
    """Lazily opened, memory-mapped shard files (reopened after pickling, e.g. in loader workers)."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names, self.handles = root, names, {}

    def get(self, shard: int, key: str) -> torch.Tensor:
        if shard not in self.handles:
            self.handles[shard] = safe_open(str(self.root / self.names[shard]), framework="pt")
        return self.handles[shard].get_tensor(key)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "handles": {}}


class CachedCaptions:
    """caption → (features (tokens, dim), tokens), read from the cache on demand with a small LRU;
    what `train.engine.CaptionCache` keeps per caption, so it never calls the encoder for these."""

    def __init__(self, shards: _Shards, rows: list[dict[str, Any]], keep: int = 256) -> None:
        self.shards, self.keep = shards, keep
        self.index = {row["text"]: (row["shard"], f"caption.{j}") for j, row in enumerate(rows)}
        self.recent: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()
        self.extra: dict[str, tuple[torch.Tensor, int]] = {}  # anything the encoder adds

    def __contains__(self, caption: str) -> bool:
        return caption in self.extra or caption in self.index

    def __getitem__(self, caption: str) -> tuple[torch.Tensor, int]:
        if caption in self.extra:
            return self.extra[caption]
        if caption in self.recent:
            self.recent.move_to_end(caption)
            return self.recent[caption]
        feats = self.shards.get(*self.index[caption])
        self.recent[caption] = (feats, feats.shape[0])
        if len(self.recent) > self.keep:
            self.recent.popitem(last=False)
        return self.recent[caption]

    def __setitem__(self, caption: str, value: tuple[torch.Tensor, int]) -> None:
        self.extra[caption] = value


class CachedItems(Dataset):
    """A cache's items as (LatentDist, caption) pairs; `caption_features` holds the text features."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = root, manifest
        self.shards = _Shards(root, manifest["shards"])
        self.items = manifest["items"]
        self.texts = [row["text"] for row in manifest["captions"]]
        self.caption_features = CachedCaptions(self.shards, manifest["captions"])
        self.pixels = manifest["latent"]["space"] == "pixels"
        self.clips = any("frames" in row for row in self.items)
        if self.clips:  # batches of clips hold one shape: grouped by the shape each clip was cached at
            self.group_key = self._group_key

    @classmethod
    def open(cls, config: TrainConfig) -> CachedItems:
        """The cache in data.cache_dir; a ConfigError naming the key when it was built for other settings."""
        root = Path(config.data.cache_dir)
        path = root / "manifest.json"
        if not path.is_file():
            raise ConfigError(f"data.cache_dir={str(root)!r} holds no cache (no manifest.json): build it with "
                              "`python -m train cache --config run.yaml`, or unset data.cache_dir to train from the images")
        try:
            manifest = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"data.cache_dir={str(root)!r} has an unreadable manifest.json; {REBUILD}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ConfigError(f"data.cache_dir={str(root)!r} is not a version-{VERSION} training cache; {REBUILD}")
        for key, value in match_keys(config).items():
            built = manifest["match"].get(key, LEGACY.get(key))
            if built != value:
                name = KEY_NAMES.get(key, key)
                raise ConfigError(f"data.cache_dir={str(root)!r} was built with {name}={built!r} but the config has "
                                  f"{value!r}: set {name}={built!r}, or {REBUILD}")
        return cls(root, manifest)

    def __len__(self) -> int:
        return len(self.items)

    def _group_key(self, index: int, epoch: int) -> tuple[int, int, int]:
        row = self.items[index]
        return (row["frames"], *row["crop"])

    def motion_score(self, index: int) -> float | None:
        """The cached item's Lumina-Video motion score (its JSONL row's), None when it had none."""
        return self.items[index].get("motion")

    def __getitem__(self, index: int) -> tuple[LatentDist, str]:
        row = self.items[index]
        key = f"clip.{index}" if "frames" in row else str(index)
        if self.pixels:
            dist = LatentDist(from_uint8(self.shards.get(row["shard"], f"{key}.pixels")))
        else:
            has_std = not (self.manifest["latent"].get("exact", False))
            dist = LatentDist(self.shards.get(row["shard"], f"{key}.mean"),
                              self.shards.get(row["shard"], f"{key}.std") if has_std else None)
        return dist, self.texts[row["caption"]]


__all__ = ["CachedCaptions", "CachedItems", "build_cache", "match_keys"]
