"""Caption encoders of Lumina-T2Music and Lumina-T2Audio, through transformers from local folders.

Both read captions like the official `models/encoders/modules.py`:
- tokenised with `padding="max_length", max_length=77, truncation=True` (T5 appends `</s>`,
  BERT wraps in `[CLS] … [SEP]`; pads are id 0);
- NO attention mask is given to the encoders, so padding tokens attend and are attended to, and
  their features are part of the context (the DiT has no caption mask either: it pools and
  cross-attends over every token). `encode` therefore returns an all-True mask.

Music (`FrozenFLANEmbedder`): FLAN-T5-large encoder, `last_hidden_state` → (B, 77, 1024).
Audio (`FrozenCLAPFLANEmbedder`): the CLAP text tower on the plain caption — BERT
(bert-base-uncased) `last_hidden_state` of every token through CLAP's projection
`LayerNorm(l1 + l2(gelu(l1)))`, l1 = Linear(768 → 1024, no bias), l2 = Linear(1024 → 1024, no bias)
— concatenated along the tokens with the T5-v1.1-large encoder's `last_hidden_state` of the
structured caption → (B, 77 + 77, 1024). The official demo asks a chat model for the structured
caption; here it is an input.

Weights. The official embedders are built from hub models and then overwritten by the diffusion
checkpoint's `cond_stage_model.*` entries (`load_state_dict(strict=False)`), so those entries are
what the released models run with: `cond_stage_model.transformer.*` (music T5),
`cond_stage_model.caption_encoder.{base,projection}.*` and `cond_stage_model.t5_transformer.*`
(audio). Here the weights come, last one winning, from: the transformers folder, then CLAP's
`CLAP_weights_2022.pth` (`model` → `caption_encoder.*`; note the official code reads this file but
never loads it into the encoder), then the checkpoint's `cond_stage_model.*` when given.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import Conditioning
from .errors import LuminaCheckpointError, LuminaError
from .text_encoders import caption_report, unknown_words

MAX_TOKENS = 77  # FrozenFLANEmbedder / FrozenCLAPFLANEmbedder max_length
CLAP_PROJECTION_DIM = 1024  # CLAP config.yml d_proj
COND_PREFIX = "cond_stage_model."


class LuminaAudioTextError(LuminaError):
    """A text-encoder folder or weight file that cannot serve the audio models."""


class ClapProjection(nn.Module):
    """CLAP's text projection (official `Projection`, dropout off): LN(l1 + l2(gelu(l1)))."""

    def __init__(self, d_in: int = 768, d_out: int = CLAP_PROJECTION_DIM) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.linear2(F.gelu(e1)))


@dataclass
class _Stack:
    """One tokenizer + encoder read the official way (fixed 77 tokens, no mask to the model)."""

    tokenizer: object
    model: nn.Module
    name: str
    source: str = ""
    max_length: int = MAX_TOKENS

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(input ids (B, 77), real-token mask (B, 77)) as the official tokenizer call gives them;
        unknown words and truncated captions are reported in one warning."""
        unknown: dict[str, list[int]] = {}
        truncated: list[str] = []
        for i, text in enumerate(texts):
            for word in unknown_words(self.tokenizer, text):
                # a Metaspace (SentencePiece) offset includes the space before the word
                unknown.setdefault(word.strip(), []).append(i + 1)
            n = len(self.tokenizer(text, truncation=False)["input_ids"])
            if n > self.max_length:
                truncated.append(f"caption {i + 1} is {n} {self.name} tokens long; the official encoder keeps the "
                                 f"first {self.max_length}, so its end is ignored")
        if unknown or truncated:
            warnings.warn(caption_report(unknown, truncated, self.source), stacklevel=3)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="max_length",
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()

    def hidden(self, texts: Sequence[str], device: torch.device | None = None) -> Tensor:
        ids, _ = self.tokenize(texts)
        device = device or next(self.model.parameters()).device
        return self.model(input_ids=ids.to(device)).last_hidden_state  # no attention mask: official


def _texts(prompts: str | Sequence[str]) -> list[str]:
    return [prompts] if isinstance(prompts, str) else list(prompts)


@dataclass
class MusicTextEncoder:
    """Lumina-T2Music captions: FLAN-T5-large encoder over 77 tokens → (B, 77, 1024)."""

    t5: _Stack

    @property
    def width(self) -> int:
        return int(self.t5.model.config.d_model)

    @torch.inference_mode()
    def encode(self, prompts: str | Sequence[str], device: torch.device | str | None = None) -> Conditioning:
        feats = self.t5.hidden(_texts(prompts), torch.device(device) if device else None)
        return Conditioning(feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device))


@dataclass
class AudioTextEncoder:
    """Lumina-T2Audio captions: CLAP text tower on the caption ++ T5-v1.1-large on the structured
    caption → (B, 154, 1024)."""

    clap: _Stack
    projection: ClapProjection
    t5: _Stack

    @property
    def width(self) -> int:
        return int(self.t5.model.config.d_model)

    @torch.inference_mode()
    def encode(self, captions: str | Sequence[str], structured: str | Sequence[str],
               device: torch.device | str | None = None) -> Conditioning:
        caps, structs = _texts(captions), _texts(structured)
        if len(caps) != len(structs):
            raise LuminaAudioTextError(
                f"{len(caps)} captions but {len(structs)} structured captions: give one structured caption per caption"
            )
        dev = torch.device(device) if device else None
        clap = self.projection(self.clap.hidden(caps, dev).to(self.projection.linear1.weight.dtype))
        t5 = self.t5.hidden(structs, dev)
        feats = torch.cat([clap.to(t5.dtype), t5], dim=1)
        return Conditioning(feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device))


# --- weights ----------------------------------------------------------------------------------------------


def text_state_dict(checkpoint: object) -> dict[str, Tensor]:
    """The text stack's weights without `cond_stage_model.`, from a whole CFM state dict, an
    already split one (keys `transformer.*`, `caption_encoder.*`, `t5_transformer.*`), or an object
    with a `cond_stage` mapping (`lumina.audio_checkpoints.AudioCheckpoint`)."""
    if hasattr(checkpoint, "cond_stage"):
        return dict(getattr(checkpoint, "cond_stage"))
    if not isinstance(checkpoint, Mapping):
        raise LuminaAudioTextError(
            f"checkpoint= takes a state dict or an AudioCheckpoint, not {type(checkpoint).__name__}"
        )
    if any(k.startswith(COND_PREFIX) for k in checkpoint):
        return {k[len(COND_PREFIX):]: v for k, v in checkpoint.items() if k.startswith(COND_PREFIX)}
    return {k: v for k, v in checkpoint.items() if k.startswith(("transformer.", "caption_encoder.", "t5_transformer."))}


def cond_stage_weights(checkpoint: object, part: str) -> dict[str, Tensor]:
    """The checkpoint's `cond_stage_model.<part>.*` entries without that prefix ({} when absent).
    Parts: `transformer` (music T5), `t5_transformer` (audio T5), `caption_encoder.base` (audio
    BERT), `caption_encoder.projection` (audio CLAP projection)."""
    prefix = f"{part}."
    return {k[len(prefix):]: v for k, v in text_state_dict(checkpoint).items() if k.startswith(prefix)}


def checkpoint_text_kind(checkpoint: object) -> str | None:
    """"music" (FLAN-T5 `cond_stage_model.transformer.*`), "audio" (CLAP + T5
    `cond_stage_model.caption_encoder.*` / `t5_transformer.*`) or None (no text weights inside)."""
    keys = text_state_dict(checkpoint)
    if any(k.startswith("transformer.") for k in keys):
        return "music"
    if any(k.startswith(("caption_encoder.", "t5_transformer.")) for k in keys):
        return "audio"
    return None


def _check_kind(checkpoint: object, want: str) -> None:
    kind = checkpoint_text_kind(checkpoint)
    if kind is not None and kind != want:
        names = {"music": "Lumina-T2Music (FLAN-T5 captions)", "audio": "Lumina-T2Audio (CLAP + T5 captions)"}
        raise LuminaCheckpointError(
            f"it is a {names[kind]} checkpoint, not a {names[want]} one", source="the checkpoint",
            hint=f"load it with the {kind} text encoder (load_{kind}_text_encoder), or give the {want} checkpoint",
        )


def clap_text_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(BERT weights, projection weights) of CLAP's `CLAP_weights_2022.pth` (entry `model`, keys
    `caption_encoder.base.*` / `caption_encoder.projection.*`), read tensors-only."""
    from .audio_files import read_tensors

    sd = read_tensors(path, "model")
    base = {k[len("caption_encoder.base."):]: v for k, v in sd.items() if k.startswith("caption_encoder.base.")}
    proj = {k[len("caption_encoder.projection."):]: v for k, v in sd.items() if k.startswith("caption_encoder.projection.")}
    if not base or not proj:
        raise LuminaCheckpointError(
            "it has no CLAP text encoder (caption_encoder.base.* / caption_encoder.projection.*)", source=str(path),
            hint="give CLAP/CLAP_weights_2022.pth of the Lumina-T2Audio release",
        )
    return base, proj


def _apply(module: nn.Module, weights: Mapping[str, Tensor], what: str, source: str) -> None:
    """Load `weights` over `module` (a partial set is fine: e.g. T5's tied `encoder.embed_tokens`);
    shape mismatches and foreign keys are errors. BERT's `embeddings.position_ids`, a buffer
    older transformers saved and newer ones no longer persist, is skipped."""
    if not weights:
        return
    own = module.state_dict()
    weights = {k: v for k, v in weights.items() if k != "embeddings.position_ids"}
    foreign = [k for k in weights if k not in own]
    wrong = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    if foreign or wrong:
        raise LuminaCheckpointError(
            f"its {what} weights do not fit the {what} of the given folder", source=source, keys=wrong + foreign,
            hint=f"use the {what} folder the model was released with (same sizes)",
        )
    module.load_state_dict(weights, strict=False)


def _load_stack(folder: str | os.PathLike, kind: str, name: str, dtype: torch.dtype | None) -> _Stack:
    """Tokenizer + encoder of a local transformers folder (offline). `kind`: "t5" or "bert"."""
    from transformers import AutoTokenizer, BertModel, T5EncoderModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise LuminaAudioTextError(
            f"{folder} is not a transformers folder (no config.json): download the whole {name} repository into it"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, ImportError, AttributeError, TypeError, RuntimeError) as err:
        raise LuminaAudioTextError(
            f"cannot load the {name} tokenizer in {folder} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "the folder needs tokenizer.json (T5 v1.1 shares FLAN-T5's vocabulary, so google/flan-t5-large's "
            "tokenizer.json serves both) or `pip install sentencepiece` for spiece.model"
        ) from None
    cls = T5EncoderModel if kind == "t5" else BertModel
    try:  # BERT keeps its (unused) pooler, as the official AutoModel does: its weights load without remarks
        model = cls.from_pretrained(folder, local_files_only=True, dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise LuminaAudioTextError(f"cannot load the {name} encoder in {folder}: {str(err).splitlines()[0][:300]}") from None
    return _Stack(tokenizer, model.eval().requires_grad_(False), name, str(folder))


def load_music_text_encoder(
    t5_folder: str | os.PathLike, checkpoint: Mapping[str, Tensor] | object | None = None, dtype: torch.dtype | None = None,
) -> MusicTextEncoder:
    """FLAN-T5-large from its folder (google/flan-t5-large); `checkpoint` = the Lumina-T2Music state
    dict, whose `cond_stage_model.transformer.*` weights then replace the folder's, as officially."""
    if checkpoint is not None:
        _check_kind(checkpoint, "music")
    t5 = _load_stack(t5_folder, "t5", "FLAN-T5", dtype)
    if checkpoint is not None:
        _apply(t5.model, cond_stage_weights(checkpoint, "transformer"), "FLAN-T5", "the music checkpoint")
    return MusicTextEncoder(t5)


def load_audio_text_encoder(
    bert_folder: str | os.PathLike, t5_folder: str | os.PathLike, clap_weights: str | os.PathLike | None = None,
    checkpoint: Mapping[str, Tensor] | object | None = None, dtype: torch.dtype | None = None,
) -> AudioTextEncoder:
    """The Lumina-T2Audio caption encoders: bert-base-uncased folder (tokenizer, config, weights),
    T5-v1.1-large folder, CLAP_weights_2022.pth (BERT + projection), and the audio checkpoint's
    `cond_stage_model.*` (they win, as in the official load order). The projection must come from
    CLAP's file or the checkpoint."""
    if checkpoint is not None:
        _check_kind(checkpoint, "audio")
    clap = _load_stack(bert_folder, "bert", "BERT (CLAP text)", dtype)
    t5 = _load_stack(t5_folder, "t5", "T5-v1.1", dtype)
    proj: tuple[dict[str, Tensor], str] | None = None
    if clap_weights is not None:
        base, weights = clap_text_weights(clap_weights)
        _apply(clap.model, base, "BERT", str(clap_weights))
        proj = (weights, str(clap_weights))
    if checkpoint is not None:
        _apply(clap.model, cond_stage_weights(checkpoint, "caption_encoder.base"), "BERT", "the audio checkpoint")
        weights = cond_stage_weights(checkpoint, "caption_encoder.projection")
        if weights:
            proj = (weights, "the audio checkpoint")
        _apply(t5.model, cond_stage_weights(checkpoint, "t5_transformer"), "T5-v1.1", "the audio checkpoint")
    if proj is None:
        raise LuminaCheckpointError(
            "the CLAP text projection has no weights", source="CLAP text encoder",
            hint="give CLAP/CLAP_weights_2022.pth (clap_weights=) or the Lumina-T2Audio checkpoint (checkpoint=)",
        )
    weights = _require_projection(*proj)
    d_out, d_in = weights["linear1.weight"].shape
    if d_in != clap.model.config.hidden_size or d_out != t5.model.config.d_model:
        raise LuminaCheckpointError(
            f"its CLAP projection maps {d_in} -> {d_out} features, but BERT gives {clap.model.config.hidden_size} "
            f"and T5 {t5.model.config.d_model}", source=proj[1],
            hint="use bert-base-uncased and t5-v1_1-large with the Lumina-T2Audio files",
        )
    projection = ClapProjection(int(d_in), int(d_out))
    _apply(projection, weights, "CLAP projection", proj[1])
    projection = projection.to(next(clap.model.parameters()).dtype)
    return AudioTextEncoder(clap, projection.eval().requires_grad_(False), t5)


def _require_projection(proj: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    need = ("linear1.weight", "linear2.weight", "layer_norm.weight", "layer_norm.bias")
    missing = [k for k in need if k not in proj]
    if missing:
        raise LuminaCheckpointError("its CLAP projection is incomplete", source=source, keys=missing,
                                    hint="download the file again")
    return dict(proj)
