"""Text encoders: the official tokenisation and feature conventions, on tiny offline models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GemmaConfig, GemmaModel, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from lumina.text_encoders import CONVENTIONS, LuminaTextEncoderError, TextEncoder, load_text_encoder

WORDS = "a red blue green circle square triangle small big at the top bottom left right of on".split()


def tiny_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:  # Gemma's tokenizer prepends BOS by itself
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", padding_side="right"
    )


def tiny_gemma() -> TextEncoder:
    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return TextEncoder(tiny_tokenizer(add_bos=True), GemmaModel(config).eval(), CONVENTIONS["gemma"])


def tiny_llama() -> TextEncoder:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return TextEncoder(tiny_tokenizer(add_bos=False), LlamaModel(config).eval(), CONVENTIONS["llama"])


PROMPTS = ["a small red circle at the top left", "", "big blue square"]


def test_gemma_tokenisation_equals_the_official_call():
    """Official: tokenizer(prompts, padding=True, pad_to_multiple_of=8, max_length=256, truncation=True)."""
    enc = tiny_gemma()
    ids, mask = enc.tokenize(PROMPTS)
    ref = enc.tokenizer(PROMPTS, padding=True, pad_to_multiple_of=8, max_length=256, truncation=True, return_tensors="pt")
    assert torch.equal(ids, ref.input_ids) and torch.equal(mask, ref.attention_mask)
    assert ids.shape[1] % 8 == 0 and (ids[:, 0] == 2).all()  # BOS first, even for the empty prompt
    assert mask[1].sum() == 1  # the empty negative prompt keeps its BOS: never an all-zero mask


def test_gemma_truncates_at_256_tokens_and_says_so():
    with pytest.warns(UserWarning, match=r"prompt 2 is 401 tokens long; the gemma convention keeps the first 256 .* after about 255 words"):
        ids, mask = tiny_gemma().tokenize(["a red circle", "red " * 400])
    assert ids.shape == (2, 256) and mask[1].all()


def test_prompts_that_fit_give_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_gemma().tokenize(["red " * 255])


def test_llama_tokenisation_adds_bos_and_eos_and_pads_with_zero():
    enc = tiny_llama()
    ids, mask = enc.tokenize(["a red circle", ""])
    body = enc.tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    assert ids[0, : len(body) + 2].tolist() == [2, *body, 1]
    assert ids[1, :2].tolist() == [2, 1] and (ids[1, 2:] == 0).all()
    assert mask.sum(1).tolist() == [len(body) + 2, 2] and ids.shape[1] == len(body) + 2  # no multiple-of-8 padding


def test_gemma_features_are_the_second_to_last_hidden_state_with_mask():
    enc = tiny_gemma()
    cond = enc.encode(PROMPTS)
    ids, mask = enc.tokenize(PROMPTS)
    ref = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(cond.cap_feats, ref, atol=0, rtol=0)
    assert cond.cap_mask.dtype == torch.bool and torch.equal(cond.cap_mask, mask.bool())


def test_llama_features_are_the_last_hidden_state_without_mask():
    enc = tiny_llama()
    cond = enc.encode(["a red circle", ""])
    ids, _ = enc.tokenize(["a red circle", ""])
    ref = enc.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(cond.cap_feats, ref, atol=0, rtol=0)


def test_real_tokens_do_not_depend_on_padding():
    """Right padding under a causal LM leaves the real tokens' features unchanged (Gemma passes the mask)."""
    enc = tiny_gemma()
    alone = enc.encode(["big blue square"])
    padded = enc.encode(["big blue square", "a small red circle at the top left of the square on the right"])
    n = int(alone.cap_mask.sum())
    torch.testing.assert_close(padded.cap_feats[0, :n], alone.cap_feats[0, :n], atol=1e-5, rtol=0)


def test_load_text_encoder_from_a_local_folder(tmp_path: Path):
    enc = tiny_gemma()
    enc.model.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    loaded = load_text_encoder(tmp_path, dtype=torch.float32)
    assert loaded.convention.name == "gemma" and loaded.hidden_size == 32
    torch.testing.assert_close(loaded.encode(PROMPTS).cap_feats, enc.encode(PROMPTS).cap_feats, atol=1e-6, rtol=0)


def test_llama_folder_gets_the_llama_convention(tmp_path: Path):
    enc = tiny_llama()
    enc.model.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    assert load_text_encoder(tmp_path).convention.name == "llama"
    assert load_text_encoder(tmp_path, convention="gemma").convention.name == "gemma"


def test_bad_folders_and_names_are_clear(tmp_path: Path):
    with pytest.raises(LuminaTextEncoderError, match="not a text-encoder folder"):
        load_text_encoder(tmp_path)
    with pytest.raises(LuminaTextEncoderError, match="unknown text-encoder convention"):
        from lumina.text_encoders import convention_for

        convention_for("gemma", "t5")


def test_unknown_words_are_reported_once_per_caption_set_with_the_words():
    enc = tiny_gemma()
    with pytest.warns(UserWarning) as record:
        enc.tokenize(["a striped red star at the top", "a star", "big blue square"])
    assert len(record) == 1
    message = str(record[0].message)
    assert "does not know 2 words: 'striped' (prompt 1), 'star' (prompt 1, 2)" in message
    assert "carry no meaning" in message


def test_unknown_words_and_truncation_share_one_report():
    enc = tiny_gemma()
    with pytest.warns(UserWarning) as record:
        enc.tokenize(["zebra", " ".join(["red"] * 300)])
    assert len(record) == 1
    message = str(record[0].message)
    assert "'zebra' (prompt 1)" in message and "prompt 2 is 301 tokens long" in message
