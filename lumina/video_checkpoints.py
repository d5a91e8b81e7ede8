"""Loading a released Lumina-Video checkpoint safely.

The official folder holds `consolidated.00-of-01.pth` (or `.safetensors`) and `model_args.pth`, a
pickled argparse Namespace. The weights are read with `lumina.checkpoints.read_state_dict`
(`torch.load(weights_only=True)`: no pickled code runs); `model_args.pth` is never opened: every
shape comes from the tensors (`infer_video_config`), and the three shape-free values (RoPE theta,
t_scale, motion_scale) default to those of the released runs and can be overridden.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import Tensor

from .checkpoints import check_state_dict, read_state_dict
from .model.lumina_video import LuminaVideo
from .video_config import LuminaVideoConfig, infer_video_config, strip_compile_prefix


def load_video_model(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor], dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu", *, config: LuminaVideoConfig | None = None, **config_overrides: Any,
) -> LuminaVideo:
    """A Lumina-Video model from a checkpoint file / official folder / state dict, built on the meta
    device and given the loaded tensors (held once). `_orig_mod.` (torch.compile) segments are dropped."""
    if isinstance(path_or_state_dict, Mapping):
        sd, source = dict(path_or_state_dict), "state dict"
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
    else:
        sd, _, source = read_state_dict(path_or_state_dict, dtype)
    sd = strip_compile_prefix(sd)
    config = config or infer_video_config(sd, source, **config_overrides)
    with torch.device("meta"):
        model = LuminaVideo(config)
    check_state_dict(model, sd, source)  # type: ignore[arg-type]
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval()


__all__ = ["load_video_model"]
