"""Reading the released Lumina-T2Music / T2Audio weight files as tensors only.

`.safetensors` are read directly; pickles (`.ckpt`, `.pt`, `.pth`) go through the tensors-only
unpickler of `lumina.safe_pickle` (a pickle that names code is refused before anything runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from .errors import LuminaCheckpointError


def read_tensors(path: str | os.PathLike, key: str | None = None) -> dict[str, Tensor]:
    """The tensors of a weight file: with `key`, those under that top-level entry of a pickle
    (`"generator"` of BigVGAN's best_netG.pt, `"model"` of CLAP_weights_2022.pth); otherwise a
    Lightning checkpoint's `state_dict` or the whole file."""
    path = Path(path)
    if not path.is_file():
        raise LuminaCheckpointError("the file does not exist", source=str(path), hint="check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file
            raise LuminaCheckpointError(
                f"the file cannot be read as safetensors ({type(err).__name__})", source=str(path),
                hint="the download is probably truncated; download it again",
            ) from None
    from .safe_pickle import load_tensors

    return load_tensors(path, key)
