"""Helpers of the node unit tests: node calls with the UI's widget defaults, and checks that a
node left its input MODEL as it was."""

from __future__ import annotations

import copy
from typing import Any

import torch

from tools.comfyui import EmbeddedComfy, node_defaults


def defaults(comfyui: EmbeddedComfy, class_type: str) -> dict[str, Any]:
    """The widget values a fresh node gets in the UI (required and optional inputs)."""
    return node_defaults({"input": comfyui.nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()}, optional=True)


def empty_latent(comfyui: EmbeddedComfy, width: int, height: int, batch_size: int = 1) -> dict:
    (latent,) = comfyui.run_node("LuminaEmptyLatent", preset="custom", width=width, height=height, batch_size=batch_size)
    return latent


def encode(comfyui: EmbeddedComfy, encoder: Any, prompt: str, negative: str = "") -> tuple[list, list]:
    return comfyui.run_node("LuminaTextEncode", text_encoder=encoder, prompt=prompt, negative_prompt=negative)


def flow_sample(comfyui: EmbeddedComfy, model: Any, positive: list, negative: list, latent: dict, **settings: Any) -> torch.Tensor:
    """The Lumina Flow Sampler's LATENT samples: the UI defaults, 3 steps, then `settings`."""
    inputs = {**defaults(comfyui, "LuminaFlowSampler"), "steps": 3, **settings}
    (out,) = comfyui.run_node("LuminaFlowSampler", model=model, positive=positive, negative=negative, latent_image=latent, **inputs)
    return out["samples"]


def snapshot(model: Any) -> dict[str, Any]:
    """What a node must not change on its input MODEL: its options and object patches."""
    return {"model_options": copy.deepcopy(model.model_options), "object_patches": dict(model.object_patches)}


def assert_untouched(model: Any, before: dict[str, Any]) -> None:
    assert model.model_options == before["model_options"]
    assert model.object_patches == before["object_patches"]


def not_lumina_model() -> Any:
    """A standard MODEL (ComfyUI's ModelPatcher) around something that is not a Lumina model."""
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), load_device=cpu, offload_device=cpu)
