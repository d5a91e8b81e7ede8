"""What the text encoder makes of a caption set: words it does not know and captions it cuts.

Reported once per caption set (a dataset's captions at start-up, one `sample` call's prompts)
with the offending words, instead of lumina's per-call warning every training step. The words
come from `lumina.text_encoders.unknown_words`; prompts use lumina's own `caption_report` text.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

from lumina.text_encoders import unknown_words

# lumina's TextEncoder.tokenize warning (caption_report): unknown words, then truncations
_LUMINA_WARNING = r"(the text encoder does not know|prompt \d+ is \d+ tokens long)"


@contextlib.contextmanager
def quiet_tokenizer() -> Iterator[None]:
    """Silence lumina's per-call caption warning where the caption set was already reported."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LUMINA_WARNING)
        yield


def token_count(encoder, caption: str) -> int:
    """Tokens the encoder's convention makes of `caption` (system prompt, BOS and EOS included)."""
    c, tok = encoder.convention, encoder.tokenizer
    body = len(tok(c.prompt_prefix + caption, add_special_tokens=False, verbose=False)["input_ids"])  # we report it
    return body + int(c.add_bos and tok.bos_token_id is not None) + int(c.add_eos and tok.eos_token_id is not None)


def _example(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def dataset_report(encoder, captions: Sequence[str], what: str) -> str | None:
    """One line on the unknown words and cut captions of a whole caption set (None when clean):
    each word with how many captions hold it and one of them, so a large dataset stays readable."""
    distinct = [c for c in dict.fromkeys(captions) if c.strip()]
    unknown: dict[str, list[str]] = {}
    cut: list[str] = []
    limit = encoder.convention.max_length
    for caption in distinct:
        for word in unknown_words(encoder.tokenizer, caption):
            unknown.setdefault(word, []).append(caption)
        if limit is not None and token_count(encoder, caption) > limit:
            cut.append(caption)
    if not unknown and not cut:
        return None
    parts = []
    if unknown:
        listed = ", ".join(f"{w!r} (in {len(c)} caption{'s' if len(c) > 1 else ''}, e.g. {_example(c[0])})"
                           for w, c in unknown.items())
        where = f" (the vocabulary: {encoder.source}/tokenizer.json)" if encoder.source else ""
        parts.append(f"the text encoder does not know {len(unknown)} word{'s' if len(unknown) > 1 else ''}: {listed}; "
                     f"they become its unknown token and carry no meaning: use words it knows{where}")
    if cut:
        parts.append(f"{len(cut)} caption{'s are' if len(cut) > 1 else ' is'} longer than the {encoder.convention.name} "
                     f"convention's {limit} tokens and lose{'s' if len(cut) == 1 else ''} the rest (e.g. {_example(cut[0])})")
    return f"{what} ({len(distinct)} distinct): " + "; ".join(parts)


def prompts_report(encoder, prompts: Sequence[str]) -> str | None:
    """lumina's own report for one call's prompts (numbered from 1), or None when clean."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.tokenize(list(prompts))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return "; ".join(messages) or None
