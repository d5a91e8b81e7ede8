"""Unknown words and cut captions are reported once per caption set, naming the words: the data's
captions at `fit` start-up (not every step) and when `cache` builds, one `sample` call's prompts."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from builders import TINY, write_images

from train.__main__ import main
from train.config import load_config
from train.engine import fit

LONG = " ".join(["a small red circle"] * 80)  # 321 tokens with BOS: over Gemma's 256


@pytest.fixture()
def folder(tmp_path) -> Path:
    """8 images; two captions hold words the tiny encoder does not know, one is too long."""
    folder = write_images(tmp_path / "imgs", [(16, 16)] * 8)
    (folder / "img000.txt").write_text("a red star on a white background")
    (folder / "img001.txt").write_text("a striped red star")
    (folder / "img002.txt").write_text(LONG)
    return folder


def _config(encoder: str, folder: Path, out: Path, *extra: str):
    return load_config(None, [*TINY, "run.progress=false", f"text.encoder={encoder}", "data.kind=folder",
                              f"data.path={folder}", "data.buckets=false", f"run.out_dir={out}", "optim.steps=3",
                              "run.save_every=3", *extra])


def _expected(encoder: str, folder: Path, distinct: int) -> str:
    return (f"data captions ({folder}) ({distinct} distinct): the text encoder does not know 2 words: "
            "'star' (in 2 captions, e.g. 'a red star on a white background'), 'striped' (in 1 caption, e.g. "
            "'a striped red star'); they become its unknown token and carry no meaning: use words it knows "
            f"(the vocabulary: {encoder}/tokenizer.json); 1 caption is longer than the gemma convention's 256 tokens "
            f"and loses the rest (e.g. {LONG[:59] + '…'!r})")


def test_fit_reports_the_data_captions_once_at_start_up(encoder, folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="train")
    config = _config(encoder, folder, tmp_path / "run", "run.sample_every=3", "run.sample_prompts=[a red star]")
    distinct = len({p.read_text() for p in folder.glob("*.txt")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(config)
    reports = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("train")]
    assert reports == [_expected(encoder, folder, distinct),
                       "run.sample_prompts (1 distinct): the text encoder does not know 1 word: 'star' (in 1 caption, "
                       "e.g. 'a red star'); they become its unknown token and carry no meaning: use words it knows "
                       f"(the vocabulary: {encoder}/tokenizer.json)"]
    # the training steps and validation images no longer repeat lumina's per-call warning
    assert not [w for w in caught if "does not know" in str(w.message) or "tokens long" in str(w.message)]


def test_clean_captions_report_nothing(encoder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="train")
    fit(_config(encoder, write_images(tmp_path / "clean", [(16, 16)] * 8), tmp_path / "run"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("train")]


def test_cache_reports_the_data_captions_once(encoder, folder, tmp_path, caplog):
    from train.cache import build_cache

    caplog.set_level(logging.INFO, logger="train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_cache(_config(encoder, folder, tmp_path / "run", f"data.cache_dir={tmp_path / 'cache'}"))
    distinct = len({p.read_text() for p in folder.glob("*.txt")})
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("train")] == [_expected(encoder, folder, distinct)]
    assert not [w for w in caught if "does not know" in str(w.message)]


def test_sample_reports_its_prompts_once_with_the_words(encoder, folder, tmp_path, capsys):
    run = fit(_config(encoder, write_images(tmp_path / "clean", [(16, 16)] * 8), tmp_path / "run"))
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["sample", str(run), "--prompt", "a red circle", "--prompt", "a red star", "--prompt", "a striped star",
                     "--prompt", LONG, "--steps", "1", "--out", str(tmp_path / "pics")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert lines == [
        "warning: the text encoder does not know 2 words: 'star' (prompt 2, 3), 'striped' (prompt 3); they become its "
        f"unknown token and carry no meaning. Use words from its vocabulary in {encoder}/tokenizer.json; prompt 4 is 321 "
        "tokens long; the gemma convention keeps the first 256 (like the official code), so the text after about 255 words "
        "is ignored"]
    assert not [w for w in caught if "does not know" in str(w.message)]
