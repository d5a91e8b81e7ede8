"""The committed demo model (assets/demo) draws what its prompts say, judged by image statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lumina
from lumina.features import RegionalPrompts, grid_masks
from lumina.text_encoders import load_text_encoder
from train.evaluate import SAMPLER, generate, prompt_set
from train.shapes import Spec, measure, score

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
CHECKPOINT = DEMO / "lumina_shapes" / "consolidated_ema.00-of-01.safetensors"
THRESHOLDS = {"colour": 0.95, "position": 0.95, "size": 0.95}  # the acceptance bar
SHAPE_BAR = 0.80  # the committed 5000-step model: 0.91 held-out, 0.87 seen (train.evaluate)

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


PAIRS = [("red", "circle", "blue", "square"), ("green", "triangle", "yellow", "circle"), ("purple", "square", "orange", "triangle"),
         ("blue", "circle", "red", "triangle"), ("yellow", "square", "purple", "circle"), ("orange", "circle", "green", "square")]


@pytest.mark.xfail(strict=True, reason="issue 7 open: the committed model gets the regions' colours 9/12 and shapes 5/12")
def test_two_regions_get_their_own_prompts(demo):
    """Left region: one colour and shape at the left; right region: another at the right."""
    model, encoder = demo
    hits, total = {"colour": 0, "shape": 0}, 0
    for i, (c1, s1, c2, s2) in enumerate(PAIRS):
        left = Spec(c1, s1, "small", "left", "white")
        right = Spec(c2, s2, "small", "right", "white")
        captions = encoder.encode([left.caption(), right.caption()])
        regions = RegionalPrompts(captions.cap_feats, captions.cap_mask, grid_masks(1, 2, 32, 32))
        cond = encoder.encode([f"{left.caption()} {right.caption()}"])
        image = lumina.sample(model, cond, encoder.encode([""]), (1, 3, 32, 32), seed=i, options=lumina.ForwardOptions(regions=regions),
                              **SAMPLER)[0].clamp(-1, 1)
        for half, spec in ((image[:, :, :16], left), (image[:, :, 16:], right)):
            found = measure(half)
            hits["colour"] += found["colour"] == spec.colour
            hits["shape"] += found["shape"] == spec.shape
            total += 1
    assert hits["colour"] / total >= 0.9, hits
    assert hits["shape"] / total >= 0.75, hits
