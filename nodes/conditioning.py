"""Text → standard CONDITIONING carrying Lumina caption features and their attention mask."""

from __future__ import annotations

from .loaders import CATEGORY


def conditioning_from(cap_feats, cap_mask) -> list:
    """ComfyUI's CONDITIONING: [[features (1, L, D), {"attention_mask": (1, L)}]]."""
    return [[cap_feats, {"attention_mask": cap_mask}]]


def encode_texts(text_encoder, texts: list[str]):
    """Caption features and mask of `texts` in one batch, as fp32 CPU tensors (CONDITIONING lives there)."""
    enc = text_encoder.encode(texts)
    return enc.cap_feats.float().cpu(), enc.cap_mask.cpu()


def prompt_lines(text: str) -> list[str]:
    """One prompt per non-empty line."""
    return [line.strip() for line in text.splitlines() if line.strip()]


class LuminaTextEncode:
    """Encodes the prompt and the negative prompt together, as the official demos do."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": ("LUMINA_TEXT_ENCODER",),
                "prompt": ("STRING", {"multiline": True, "default": ""}),
                "negative_prompt": ("STRING", {"multiline": True, "default": ""}),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text_encoder, prompt: str, negative_prompt: str):
        feats, mask = encode_texts(text_encoder, [prompt, negative_prompt])
        return conditioning_from(feats[:1], mask[:1]), conditioning_from(feats[1:], mask[1:])


class LuminaBatchTextEncode:
    """One prompt per line → a batch CONDITIONING, item i for latent i (e.g. a style-shared batch)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": ("LUMINA_TEXT_ENCODER",),
                "prompts": ("STRING", {"multiline": True, "default": "a cat\na dog"}),
                "negative_prompt": ("STRING", {"multiline": True, "default": ""}),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text_encoder, prompts: str, negative_prompt: str):
        lines = prompt_lines(prompts)
        if not lines:
            raise ValueError("write at least one prompt, one per line")
        feats, mask = encode_texts(text_encoder, [*lines, negative_prompt])
        return conditioning_from(feats[:-1], mask[:-1]), conditioning_from(feats[-1:], mask[-1:])
