"""CONDITIONING with areas or masks → a global caption plus lumina RegionalPrompts.

Regions come from core `ConditioningSetArea` / `ConditioningSetMask` entries combined with
`ConditioningCombine`, or from the Lumina Regional Prompts node, which writes the same entries.
Entries without an area or mask are global: the first one is the global caption (the pooled adaLN
input and the text of tokens outside every region); without one, the regions' captions, joined
along the token axis, serve as the global caption.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..lumina.conditioning import Conditioning, concat
from ..lumina.features.compositional import RegionalPrompts, box_mask


def caption_of(entry: list) -> Conditioning:
    """One CONDITIONING entry as lumina captions (an all-ones mask when it carries none)."""
    feats, extras = entry[0], entry[1]
    mask = extras.get("attention_mask")
    if mask is None:
        mask = torch.ones(feats.shape[:2], dtype=torch.bool)
    return Conditioning(feats.float().cpu(), mask.cpu())


GRID_KEY = "lumina_grid"  # set by Lumina Regional Prompts: a layout mask, stretched to any image


def _region_mask(extras: dict, latent_h: int, latent_w: int, factor: int) -> torch.Tensor | None:
    """A latent-resolution weight map for an area or mask entry, None for a global entry."""
    px_w, px_h = latent_w * factor, latent_h * factor
    if "area" in extras:
        # ConditioningSetArea stores (height, width, y, x) in 8-px units whatever the model's latent is
        h, w, y, x = (int(v) * 8 // factor for v in extras["area"][:4])
        if y >= latent_h or x >= latent_w or h <= 0 or w <= 0:
            raise ValueError(
                f"a regional area at x={x * factor}, y={y * factor} px of size {w * factor}×{h * factor} px lies "
                f"outside the {px_w}×{px_h} px image; move it inside (ConditioningSetArea x, y, width, height)"
            )
        return box_mask(latent_h, latent_w, y, x, h, w) * min(float(extras.get("strength", 1.0)), 1.0)
    if "mask" in extras:
        mask = extras["mask"].float().cpu()
        size = tuple(mask.shape[-2:])
        if not extras.get(GRID_KEY) and not _same_aspect(size, (latent_h, latent_w)):
            raise ValueError(
                f"a regional mask of {size[1]}×{size[0]} px does not fit the {px_w}×{px_h} px image; "
                "draw the mask at the image's size (or its aspect ratio)"
            )
        mask = mask.reshape(-1, *mask.shape[-2:])[:1][None]  # masks are drawn at image resolution
        mask = F.interpolate(mask, size=(latent_h, latent_w), mode="bilinear", align_corners=False)[0, 0]
        return (mask * float(extras.get("mask_strength", 1.0))).clamp(0, 1)
    return None


def _same_aspect(size: tuple[int, int], latent: tuple[int, int], tolerance: float = 0.03) -> bool:
    """A mask drawn for this image: same height/width ratio within a few percent (any resolution)."""
    return abs(size[0] / size[1] - latent[0] / latent[1]) <= tolerance * latent[0] / latent[1]


def split_regions(
    conditioning: list, latent_h: int, latent_w: int, factor: int = 8
) -> tuple[Conditioning, RegionalPrompts | None]:
    """(global caption, regions or None); factor: image pixels per latent pixel."""
    if not conditioning:
        raise ValueError("positive conditioning is empty; connect a Lumina Text Encode output")
    globals_, captions, masks = [], [], []
    for entry in conditioning:
        region = _region_mask(entry[1], latent_h, latent_w, factor)
        if region is None:
            globals_.append(caption_of(entry))
        else:
            captions.append(caption_of(entry))
            masks.append(region)
    if not captions:
        return globals_[0], None
    stacked = concat(captions)
    if globals_:
        global_caption = globals_[0]
    else:  # regions only: every region token, side by side, is the global caption
        keep = stacked.cap_mask.reshape(-1)
        feats = stacked.cap_feats.reshape(-1, stacked.cap_feats.shape[-1])[keep][None]
        global_caption = Conditioning(feats, torch.ones(feats.shape[:2], dtype=torch.bool))
    return global_caption, RegionalPrompts(stacked.cap_feats, stacked.cap_mask, torch.stack(masks))
