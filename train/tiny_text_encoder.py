"""A tiny, randomly initialised Gemma text encoder for the shapes captions.

`build_text_encoder(folder)` writes a transformers folder that `lumina.text_encoders.load_text_encoder`
loads offline like Gemma-2B (convention "gemma" by model_type: BOS added, mask passed to the LM,
features = hidden_states[-2]):

- a word-level tokenizer (`tokenizers` WordLevel + Whitespace pre-tokenizer + lowercase normaliser)
  over every word of every caption, with <pad>=0, <eos>=1, <bos>=2, <unk>=3, and a post-processor
  that prepends <bos> as Gemma's does; saved as a `PreTrainedTokenizerFast` (padding on the right);
- a `GemmaForCausalLM` with random weights drawn from `seed`, saved as safetensors (≈ 0.3 MB).

The encoder stays frozen during training; random features are enough to tell the words apart
(see the shared reference notes on tiny models).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0, 1, 2, 3


def vocabulary(captions: Iterable[str] | None = None) -> list[str]:
    """Special tokens, then every (lower-cased) word of `captions` (default: all shapes captions)."""
    from tokenizers.pre_tokenizers import Whitespace

    if captions is None:
        from .shapes import all_specs

        captions = [s.caption() for s in all_specs()]
    split = Whitespace()
    words = {w for c in captions for w, _ in split.pre_tokenize_str(c.lower())}
    return list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))


def build_tokenizer(captions: Iterable[str] | None = None):
    """A `PreTrainedTokenizerFast` over the caption words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(captions))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        padding_side="right", model_max_length=256,
    )


def build_text_encoder(folder: str | os.PathLike, seed: int = 0, hidden: int = 64, layers: int = 2,
                       captions: Iterable[str] | None = None) -> Path:
    """Write the tokenizer and a random `GemmaForCausalLM` (weights from `seed`) into `folder`."""
    from transformers import GemmaConfig, GemmaForCausalLM

    if hidden % 16:
        raise ValueError(f"hidden must be a multiple of 16 (4 heads × head_dim ≥ 16), got {hidden}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(captions)
    config = GemmaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=1, head_dim=hidden // 4,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GemmaForCausalLM(config)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def world_captions() -> list[str]:
    """Every caption of the procedural world: single shapes, two-object scenes, moving shapes."""
    from .moving_shapes import all_captions as motion_captions
    from .scenes import all_captions as scene_captions
    from .shapes import all_specs

    return [s.caption() for s in all_specs()] + scene_captions() + motion_captions()


def main(argv: list[str] | None = None) -> int:
    """`python -m train.tiny_text_encoder OUT`: the demo's text encoder, a tiny random Gemma whose
    vocabulary holds every word of the procedural world (shapes, scenes, moving shapes); the
    committed assets/demo/shapes_text_encoder is this command's output, bit for bit."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m train.tiny_text_encoder", description=main.__doc__.split("\n")[0])
    parser.add_argument("out", help="the folder to write the text encoder to")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (a multiple of 16; default %(default)s)")
    args = parser.parse_args(argv)
    print(build_text_encoder(args.out, seed=0, hidden=args.hidden, captions=world_captions()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
