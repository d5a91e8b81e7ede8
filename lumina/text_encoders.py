"""Text encoders for captions: local transformers folders, tokenised and read like the official code.

Next-DiT (Gemma-2B): right padding to the batch's longest prompt rounded up to a multiple of 8,
at most 256 tokens with truncation, BOS added, the attention mask passed to the LM, features =
`hidden_states[-2]` (second-to-last layer, before the final norm).
Flag-DiT (LLaMA-2-7B): BOS and EOS added, no truncation, padding with id 0 on the right, no
mask given to the (causal) LM, features = `last_hidden_state`.
Lumina-Video (Gemma-2-2B, `lumina_video`): the Next-DiT rule (right padding to a multiple of 8, at
most 256 tokens with truncation, BOS, mask to the LM, `hidden_states[-2]`) applied to the fixed
system prompt + the prompt, as the official generate.py and training captions do; the negative
prompt gets the system prompt too (an empty negative prompt is the system prompt alone, the
caption dropped during training). Truncation counts the system prompt's tokens.
Prompt and negative prompt are encoded together as one batch, as the official demos do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .conditioning import Conditioning
from .errors import LuminaError


class LuminaTextEncoderError(LuminaError):
    """A text-encoder folder that cannot be used."""


@dataclass(frozen=True)
class EncoderConvention:
    name: str
    hidden_state: int | None  # index into hidden_states; None = last_hidden_state
    mask_to_model: bool
    add_bos: bool
    add_eos: bool
    max_length: int | None  # truncation length; None = never truncate
    pad_to_multiple_of: int | None
    pad_token_id: int | None  # force this pad id (LLaMA has none of its own)
    prompt_prefix: str = ""  # put before every prompt (and negative prompt) before tokenising


# The system prompt Lumina-Video was trained and sampled with (official generate.py / train.py
# SYSTEM_PROMPT), byte for byte, trailing space included.
LUMINA_VIDEO_SYSTEM_PROMPT = (
    "You are an assistant designed to generate high-quality videos with the highest degree of "
    "image-text alignment based on user prompts. <Prompt Start> "
)

CONVENTIONS = {
    "gemma": EncoderConvention("gemma", -2, True, True, False, 256, 8, None),
    "llama": EncoderConvention("llama", None, False, True, True, None, None, 0),
    "lumina_video": EncoderConvention("lumina_video", -2, True, True, False, 256, 8, None, LUMINA_VIDEO_SYSTEM_PROMPT),
}
# Gemma-2 (hidden size 2304) only feeds Lumina-Video; Next-DiT's Gemma-2B gives 2048.
MODEL_TYPE_TO_CONVENTION = {"gemma": "gemma", "gemma2": "lumina_video", "llama": "llama"}


def convention_for(model_type: str, name: str = "auto") -> EncoderConvention:
    """The official convention by name, or by the encoder's `model_type` ("gemma" for unknown)."""
    if name != "auto":
        if name not in CONVENTIONS:
            raise LuminaTextEncoderError(f"unknown text-encoder convention {name!r}; choose auto, {', '.join(CONVENTIONS)}")
        return CONVENTIONS[name]
    return CONVENTIONS[MODEL_TYPE_TO_CONVENTION.get(model_type, "gemma")]


@dataclass
class TextEncoder:
    """A tokenizer, a transformers base model, and how Lumina reads them."""

    tokenizer: object
    model: torch.nn.Module
    convention: EncoderConvention
    source: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, mask) of the batch. Words the tokenizer does not know and truncated prompts
        are reported in one warning per call (one caption set), naming the words."""
        c = self.convention
        tok = self.tokenizer
        ids, truncated, unknown = [], [], {}
        for i, prompt in enumerate(prompts):
            # Special tokens are placed here, not by the tokenizer, so every tokenizer class obeys
            # the convention (Gemma's adds BOS itself; LLaMA's needs add_bos/add_eos switched on).
            body = tok(c.prompt_prefix + prompt, add_special_tokens=False)["input_ids"]
            for word in unknown_words(tok, prompt):
                unknown.setdefault(word, []).append(i + 1)
            seq = ([tok.bos_token_id] if c.add_bos and tok.bos_token_id is not None else []) + list(body)
            if c.add_eos and tok.eos_token_id is not None:
                seq.append(tok.eos_token_id)
            if c.max_length is not None and len(seq) > c.max_length:
                kept = _words_before(tok, body, c.max_length) - len(c.prompt_prefix.split())
                truncated.append(f"prompt {i + 1} is {len(seq)} tokens long; the {c.name} convention keeps the first "
                                 f"{c.max_length} (like the official code), so the text after about {kept} words is ignored"
                                 + (" (the system prompt counts too)" if c.prompt_prefix else ""))
                seq = seq[: c.max_length]
            ids.append(seq)
        if unknown or truncated:
            warnings.warn(caption_report(unknown, truncated, self.source), stacklevel=2)
        longest = max(len(s) for s in ids)
        if c.pad_to_multiple_of:  # 256 is a multiple of 8, so this never exceeds max_length
            m = c.pad_to_multiple_of
            longest = -(-longest // m) * m
        pad = c.pad_token_id if c.pad_token_id is not None else (tok.pad_token_id if tok.pad_token_id is not None else 0)
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, s in enumerate(ids):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return input_ids, mask

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], device: torch.device | str | None = None) -> Conditioning:
        """Features and mask for a batch of prompts (encode prompt and negative together)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        device = device or next(self.model.parameters()).device
        input_ids, mask = self.tokenize(prompts)
        input_ids, mask = input_ids.to(device), mask.to(device)
        c = self.convention
        out = self.model(
            input_ids=input_ids, attention_mask=mask if c.mask_to_model else None,
            output_hidden_states=c.hidden_state is not None,
        )
        feats = out.last_hidden_state if c.hidden_state is None else out.hidden_states[c.hidden_state]
        return Conditioning(feats, mask.bool())


def unknown_words(tokenizer, text: str) -> list[str]:
    """The words of `text` the tokenizer can only map to its unknown token (in order, once each).
    Byte-fallback tokenizers (Gemma's, LLaMA's) have none; word-level and small vocabularies do."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not text.strip():
        return []
    found: list[str] = []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [span for tid, span in zip(enc["input_ids"], enc["offset_mapping"]) if tid == unk]
        words = [text[a:b] for a, b in spans]
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer: check word by word
        words = [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
    for word in words:
        if word and word not in found:
            found.append(word)
    return found


def caption_report(unknown: dict[str, list[int]], truncated: list[str], source: str = "") -> str:
    """One message for a caption set: the unknown words (with their prompts) and the truncations."""
    parts = []
    if unknown:
        listed = ", ".join(f"{w!r} (prompt {', '.join(map(str, sorted(set(n))))})" for w, n in unknown.items())
        where = f" in {source}/tokenizer.json" if source else ""
        parts.append(f"the text encoder does not know {len(unknown)} word{'s' if len(unknown) > 1 else ''}: {listed}; "
                     f"they become its unknown token and carry no meaning. Use words from its vocabulary{where}")
    parts.extend(truncated)
    return "; ".join(parts)


def _words_before(tokenizer, ids: list[int], limit: int) -> int:
    """How many words of the prompt fit before the token limit (for the truncation warning)."""
    return len(tokenizer.decode(ids[: max(0, limit - 1)]).split())


def is_text_encoder_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    )


def load_text_encoder(
    folder: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    convention: str = "auto",
) -> TextEncoder:
    """A local transformers folder (Gemma-2B, LLaMA-2-7B, Gemma-2-2B or any causal LM), offline only.

    `convention="auto"` picks by the folder's model_type: gemma → "gemma" (Next-DiT), gemma2 →
    "lumina_video" (system prompt + Next-DiT rule), llama → "llama" (Flag-DiT)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    if not is_text_encoder_folder(folder):
        raise LuminaTextEncoderError(
            f"{folder} is not a text-encoder folder: it needs config.json and tokenizer files "
            "(download e.g. google/gemma-2b, google/gemma-2-2b or meta-llama/Llama-2-7b-hf into it)"
        )
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype or "auto")
    except (OSError, ValueError, KeyError) as err:
        raise LuminaTextEncoderError(f"cannot load the text encoder in {folder}: {err}") from None
    if hasattr(model, "get_decoder") and not hasattr(model.config, "hidden_size"):
        model = model.get_decoder()
    model = model.to(device).eval().requires_grad_(False)
    return TextEncoder(tokenizer, model, convention_for(getattr(config, "model_type", ""), convention), str(folder))
