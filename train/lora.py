"""LoRA fine-tuning with peft, exported in the kohya key format that ComfyUI's core LoraLoader
applies to any model: `lora_unet_<module path with _>.lora_down/lora_up/alpha`."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

# attention (self and cross) and SwiGLU projections of every block
DEFAULT_TARGETS = ("wq", "wk", "wv", "wo", "wk_y", "wv_y", "w1", "w2", "w3")


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None = None, targets: tuple[str, ...] = DEFAULT_TARGETS) -> torch.nn.Module:
    """Inject LoRA adapters in place (peft) and freeze everything else; returns the model."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), lora_dropout=0.0, bias="none")
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def _adapters(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None):
    """(module name, module, lora_A weight, lora_B weight) of every adapted module; the weights from
    `state_dict` when given (a full state dict gathered under FSDP, whose own tensors are shards)."""
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        name = name.replace("_fsdp_wrapped_module.", "")  # FSDP units inside an unwrapped root
        if state_dict is None:
            yield name, module, module.lora_A["default"].weight, module.lora_B["default"].weight
        else:
            yield name, module, state_dict[f"{name}.lora_A.default.weight"], state_dict[f"{name}.lora_B.default.weight"]


def lora_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """kohya-format LoRA tensors: down = peft's lora_A, up = lora_B, alpha so that the core loader's
    scale alpha/rank equals peft's scaling."""
    out = {}
    for name, module, down, up in _adapters(model, state_dict):
        rank = down.shape[0]
        key = "lora_unet_" + name.replace(".", "_")
        out[f"{key}.lora_down.weight"] = down.detach().float().contiguous().cpu()
        out[f"{key}.lora_up.weight"] = up.detach().float().contiguous().cpu()
        out[f"{key}.alpha"] = torch.tensor(float(module.scaling["default"] * rank))
    return out


def save_lora(model: torch.nn.Module, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_state_dict(model, state_dict), str(path), metadata={"format": "pt", "lora_format": "kohya"})
    return path


def base_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's own weights without adapters (peft names them `<module>.base_layer.weight`)."""
    state_dict = model.state_dict() if state_dict is None else state_dict
    return {k.replace(".base_layer.", "."): v for k, v in state_dict.items() if "lora_" not in k}


def merged_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Official-layout weights with the LoRA deltas added in (what a loader applying the LoRA at
    strength 1 computes); from `state_dict` (the model's, gathered) when given."""
    merged = {k: v.detach().clone() for k, v in base_state_dict(model, state_dict).items()}
    for name, module, down, up in _adapters(model, state_dict):
        delta = up @ down * module.scaling["default"]
        merged[f"{name}.weight"] += delta.to(merged[f"{name}.weight"].dtype)
    return merged
