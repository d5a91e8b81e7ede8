"""The committed demo model (assets/demo) draws what its prompts say, judged by image statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lumina
from lumina.features import SharedAttention
from lumina.text_encoders import load_text_encoder
from train.evaluate import SAMPLER, generate, generate_regional, prompt_set, style_batches
from train.scenes import PairSpec, score_pairs
from train.shapes import measure, score

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


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="issue 17 open: the committed model saw single shapes only (40 held-out scenes, "
                          "python -m train.evaluate --regions: colour 0.66, shape 0.53)")
def test_two_regions_get_their_own_prompts(demo):
    """Left region: one colour and shape at the left; right region: another at the right."""
    model, encoder = demo
    scenes = [PairSpec(*pair) for pair in PAIRS]
    accuracy = score_pairs(generate_regional(model, encoder, scenes), scenes)
    assert accuracy["colour"] >= 0.9, accuracy
    assert accuracy["shape"] >= 0.75, accuracy


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="issue 17 open: in style-aligned batches the committed model leaves items blank "
                          "(python -m train.evaluate --style: 20 of 80 items blank, shape 0.49)")
def test_style_aligned_items_keep_their_own_shape(demo):
    model, encoder = demo
    side = model.config.base_image_size
    blank, right, items = 0, 0, 0
    for b, batch in enumerate(style_batches(5)):
        images = lumina.sample(model, encoder.encode([s.caption() for s in batch]), encoder.encode([""]),
                               (len(batch), 3, side, side), seed=b,
                               options=lumina.ForwardOptions(features=(SharedAttention(reference=0),)), **SAMPLER)
        for image, spec in zip(images.clamp(-1, 1), batch):
            found = measure(image)
            blank += found["colour"] is None
            right += found["shape"] == spec.shape
            items += 1
    assert blank == 0, f"{blank} of {items} items blank"
    assert right / items >= 0.8, f"shape right in {right} of {items}"
