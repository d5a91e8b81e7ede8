"""Lumina-Video captions: Gemma-2-2B read like the official generate.py, on a tiny offline Gemma-2."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

from lumina.text_encoders import (
    CONVENTIONS,
    LUMINA_VIDEO_SYSTEM_PROMPT,
    TextEncoder,
    convention_for,
    load_text_encoder,
)

WORDS = "a red blue green circle square octopus crab ocean small big at the top of on".split()


def tiny_gemma2_tokenizer() -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Whitespace()
    system_words = [w for w, _ in pre.pre_tokenize_str(LUMINA_VIDEO_SYSTEM_PROMPT)]
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in system_words + WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    # Gemma-2's tokenizer prepends BOS itself and adds no EOS, like Gemma's
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", padding_side="right"
    )


def tiny_gemma2(convention: str = "lumina_video") -> TextEncoder:
    torch.manual_seed(0)
    tok = tiny_gemma2_tokenizer()
    config = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return TextEncoder(tok, Gemma2Model(config).eval(), CONVENTIONS[convention])


PROMPTS = ["a small red octopus at the top", ""]  # prompt and the default (empty) negative prompt


def official_call(enc: TextEncoder, prompts):
    """generate.py: tokenizer(SYSTEM_PROMPT + p for p, padding=True, pad_to_multiple_of=8, max_length=256,
    truncation=True), right padding; the LM gets the mask; features = hidden_states[-2]."""
    real = [LUMINA_VIDEO_SYSTEM_PROMPT + p for p in prompts]
    ref = enc.tokenizer(real, padding=True, pad_to_multiple_of=8, max_length=256, truncation=True, return_tensors="pt")
    feats = enc.model(input_ids=ref.input_ids, attention_mask=ref.attention_mask, output_hidden_states=True).hidden_states[-2]
    return ref.input_ids, ref.attention_mask, feats


def test_the_system_prompt_is_the_official_string():
    assert LUMINA_VIDEO_SYSTEM_PROMPT.endswith("<Prompt Start> ") and LUMINA_VIDEO_SYSTEM_PROMPT.startswith("You are an assistant")
    c = CONVENTIONS["lumina_video"]
    assert (c.hidden_state, c.mask_to_model, c.add_bos, c.add_eos, c.max_length, c.pad_to_multiple_of) == (-2, True, True, False, 256, 8)


def test_existing_conventions_have_no_prefix():
    assert CONVENTIONS["gemma"].prompt_prefix == "" and CONVENTIONS["llama"].prompt_prefix == ""


def test_tokenisation_and_features_equal_the_official_call():
    enc = tiny_gemma2()
    ids, mask = enc.tokenize(PROMPTS)
    ref_ids, ref_mask, ref_feats = official_call(enc, PROMPTS)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert ids.shape[1] % 8 == 0 and (ids[:, 0] == 2).all() and not (ids == 1).any()  # BOS, no EOS
    assert not ((ids == 3) & mask.bool()).any()  # every word is in the tiny vocab (no <unk>)
    n_system = len(enc.tokenizer(LUMINA_VIDEO_SYSTEM_PROMPT)["input_ids"])
    assert int(mask[1].sum()) == n_system  # the empty negative prompt is the system prompt alone
    cond = enc.encode(PROMPTS)
    torch.testing.assert_close(cond.cap_feats, ref_feats, atol=0, rtol=0)
    assert cond.cap_feats.shape == (2, ids.shape[1], 32) and torch.equal(cond.cap_mask, ref_mask.bool())


def test_truncation_counts_the_system_prompt_and_says_so():
    enc = tiny_gemma2()
    n_system = len(enc.tokenizer(LUMINA_VIDEO_SYSTEM_PROMPT)["input_ids"])  # with BOS
    long = "red " * 300
    with pytest.warns(UserWarning, match=r"prompt 1 is \d+ tokens long; the lumina_video convention keeps the first 256 .*system prompt counts too"):
        ids, mask = enc.tokenize([long, ""])
    ref_ids, ref_mask, _ = official_call(enc, [long, ""])
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask) and ids.shape == (2, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(["red " * (256 - n_system)])  # exactly fits


def test_gemma2_folder_gets_the_lumina_video_convention(tmp_path: Path):
    enc = tiny_gemma2()
    enc.model.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    loaded = load_text_encoder(tmp_path, dtype=torch.float32)
    assert loaded.convention.name == "lumina_video" and loaded.hidden_size == 32
    torch.testing.assert_close(loaded.encode(PROMPTS).cap_feats, official_call(enc, PROMPTS)[2], atol=1e-6, rtol=0)
    assert load_text_encoder(tmp_path, convention="gemma").convention.prompt_prefix == ""
    assert convention_for("gemma2").name == "lumina_video" and convention_for("gemma").name == "gemma"
