"""Which dtype runs a model well on a device ("auto" in the loaders).

CUDA: bf16 where the GPU runs it natively (the official precision), fp16 otherwise. CPU: bf16 where
the CPU multiplies bf16 natively (avx512_bf16 or AMX tiles), fp32 elsewhere (emulated bf16 is slow
and fp16 is ~300× slower than either). `benchmarks/cpu_bf16.py` measured what bf16 costs on such a
CPU: the forward at 0.52× fp32's time, the demo model's held-out accuracy 0.912 (fp32) → 0.918 (bf16)
at 55.5 dB PSNR between the images, and 61.9 dB between final latents at the 2B model's width.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matrix multiplies in hardware (torch asks cpuinfo)."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    for check in checks:
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a torch build without cpuinfo: assume not
            pass
    return False


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype "auto" picks for model weights on `device`."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


__all__ = ["cpu_has_native_bf16", "auto_dtype"]
