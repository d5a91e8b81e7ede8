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
THRESHOLDS = {"colour": 0.95, "position": 0.95, "size": 0.95, "shape": 0.80}  # the acceptance bar

pytestmark = pytest.mark.skipif(not CHECKPOINT.exists(), reason="the demo model is not committed yet")


@pytest.fixture(scope="module")
def demo():
    return lumina.load_model(CHECKPOINT, dtype=torch.float32), load_text_encoder(DEMO / "shapes_text_encoder", dtype=torch.float32)


@pytest.mark.parametrize("which, count", [("held_out", None), ("seen", 150)])
def test_prompts_are_drawn(demo, which, count):
    model, encoder = demo
    specs = prompt_set(which, count=count)
    assert len(specs) >= 50
    accuracy = score(generate(model, encoder, specs), specs)
    print(which, accuracy)
    for attribute, bar in THRESHOLDS.items():
        assert accuracy[attribute] >= bar, f"{which}: {attribute} accuracy {accuracy[attribute]:.3f} < {bar}"


PAIRS = [("red", "circle", "blue", "square"), ("green", "triangle", "yellow", "circle"), ("purple", "square", "orange", "triangle"),
         ("blue", "circle", "red", "triangle"), ("yellow", "square", "purple", "circle"), ("orange", "circle", "green", "square")]


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
