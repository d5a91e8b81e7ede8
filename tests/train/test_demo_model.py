"""The committed demo model (assets/demo) draws what its prompts say, judged by image statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lumina
from lumina.text_encoders import load_text_encoder
from train.evaluate import evaluate_regions, evaluate_style, generate, prompt_set
from train.shapes import score

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
CHECKPOINT = DEMO / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors"
THRESHOLDS = {"colour": 0.95, "position": 0.95, "size": 0.95}  # the acceptance bar
SHAPE_BAR = 0.90  # the bar; the committed model: 0.97 held-out, 0.97 seen (train.evaluate)

pytestmark = pytest.mark.skipif(not CHECKPOINT.exists(), reason="the demo model is not committed yet")


@pytest.fixture(scope="module")
def demo():
    return lumina.load_model(CHECKPOINT, dtype=torch.float32), load_text_encoder(DEMO / "shapes_text_encoder", dtype=torch.float32)


@pytest.fixture(scope="module")
def accuracies(demo) -> dict:
    model, encoder = demo
    out = {}
    for which, count in (("held_out", None), ("seen", 150)):
        specs = prompt_set(which, count=count)
        assert len(specs) >= 50
        out[which] = score(generate(model, encoder, specs), specs)
    return out


@pytest.mark.parametrize("which", ["held_out", "seen"])
def test_colour_position_and_size_are_drawn(accuracies, which):
    accuracy = accuracies[which]
    for attribute, bar in THRESHOLDS.items():
        assert accuracy[attribute] >= bar, f"{which}: {attribute} accuracy {accuracy[attribute]:.3f} < {bar}"


@pytest.mark.parametrize("which", ["held_out", "seen"])
def test_shapes_are_drawn(accuracies, which):
    assert accuracies[which]["shape"] >= SHAPE_BAR, f"{which}: shape accuracy {accuracies[which]['shape']:.3f}"


def test_two_regions_get_their_own_prompts():
    """40 held-out two-object scenes through regional prompts (left half's caption on the left half
    of a 1×2 grid, the right's on the right, the scene's caption as the global prompt): each half's
    colour ≥ 90 % and shape ≥ 75 % (the issue's bar; the committed model: 1.00 and 0.94)."""
    accuracy = evaluate_regions(CHECKPOINT, DEMO / "shapes_text_encoder", count=40)
    assert accuracy["scenes"] == 40
    assert accuracy["colour"] >= 0.9, accuracy
    assert accuracy["shape"] >= 0.75, accuracy


def test_style_aligned_items_keep_their_own_shape():
    """20 style-aligned batches of 4 (item 0's keys and values shared in the first half of the
    layers, as the demo workflow does): every item shows its own shape ≥ 80 % and none is blank."""
    report = evaluate_style(CHECKPOINT, DEMO / "shapes_text_encoder", count=20)
    assert report["items"] == 80 and report["layers"] == [0, 3]
    assert report["blank"] == 0, report
    assert report["shape"] >= 0.8, report


def test_demo_files_fit_the_size_budget():
    """Every committed demo file together (models, text encoder, LoRA, edit input) stays ≤ 30 MB."""
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= 30_000_000, f"assets/demo holds {total / 1e6:.1f} MB"
