"""fp8 weight storage: linear weights kept in float8 (e4m3fn by default), cast to the compute dtype
one layer at a time as the forward reaches it.

The linear layers hold nearly all of a DiT's or a text encoder's weights, so storing them in fp8
halves the bf16 footprint; norms, embeddings, biases and the learned tokens stay in the compute
dtype. The cast is plain (no scale), like ComfyUI's own fp8 weights, so the state dict keeps its
keys and shapes and LoRA patches apply as they do to any weight. `benchmarks/fp8_weights.py`
measures the memory and the output difference against bf16.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LuminaInputError

FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


class CastLinear(nn.Linear):
    """nn.Linear whose stored weight may have another dtype than the input: the weight (and bias)
    are cast to the input's dtype for the product, and the cast copy is freed right after."""

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def in_blocks(name: str) -> bool:
    """Linear layers of the repeated blocks (`layers.<i>.…`, in Lumina models and transformers LMs):
    nearly all weights; the embedders and final layers stay, and with them the dtype a model
    computes in (Lumina models read it off their embedder's weight)."""
    return name.startswith("layers.") or ".layers." in name


def store_fp8(
    module: nn.Module, compute_dtype: torch.dtype = torch.bfloat16, fp8: str = "fp8_e4m3fn",
    include: Callable[[str], bool] = in_blocks,
) -> nn.Module:
    """In place: the weight of every nn.Linear whose name `include` accepts stored in `fp8` (weights
    already in it stay as they are), every other floating tensor in `compute_dtype`. Returns the
    module. Weights whose values overflow the fp8 range are refused (e4m3fn reaches ±448)."""
    if fp8 not in FP8_DTYPES:
        raise LuminaInputError(f"unknown fp8 format {fp8!r}; choose one of {', '.join(FP8_DTYPES)}")
    storage = FP8_DTYPES[fp8]
    limit = torch.finfo(storage).max
    targets = {name: layer for name, layer in module.named_modules()
               if (type(layer) is nn.Linear or isinstance(layer, CastLinear)) and include(name)}
    with torch.no_grad():
        for name, layer in targets.items():
            weight = layer.weight.detach()
            if weight.dtype != storage:
                peak = float(weight.abs().max()) if weight.numel() else 0.0
                if peak > limit:
                    raise LuminaInputError(f"{name}.weight reaches {peak:.3g}, beyond {fp8}'s ±{limit:g}: keep this model in bf16")
                weight = weight.to(storage)
            layer.__class__ = CastLinear
            layer.weight = nn.Parameter(weight, requires_grad=False)
        fp8_ids = {id(layer.weight) for layer in targets.values()}
        for sub in module.modules():  # everything else to the compute dtype, tensor by tensor
            for key, p in list(sub._parameters.items()):
                if p is not None and p.is_floating_point() and id(p) not in fp8_ids and p.dtype != compute_dtype:
                    sub._parameters[key] = nn.Parameter(p.detach().to(compute_dtype), requires_grad=p.requires_grad)
            for key, b in list(sub._buffers.items()):
                if b is not None and b.is_floating_point() and b.dtype != compute_dtype and not b.is_complex():
                    sub._buffers[key] = b.to(compute_dtype)
    return module


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and buffers as stored."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


__all__ = ["CastLinear", "store_fp8", "in_blocks", "weight_bytes", "FP8_DTYPES"]
