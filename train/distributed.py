"""How the training run is spread over processes: the accelerate Accelerator for a config.

`python -m train fit` on one CPU, under `accelerate launch` (DDP) or `torchrun` all build it here,
so the engine never asks which kind of run it is in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainConfig


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(
        mixed_precision=config.run.mixed_precision, cpu=not torch.cuda.is_available(),
        log_with="tensorboard" if config.run.tensorboard else None, project_dir=str(Path(config.run.out_dir)),
    )
