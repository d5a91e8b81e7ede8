"""The committed demo LoRA (assets/demo/loras/blue_background.safetensors): its documented command
retrains it bit for bit, it draws its concept, and the demo model keeps its held-out accuracy on the
original prompts (issue 15's acceptance: ≥ 0.85 after the fine-tune with prior preservation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from train import prior_preservation as pp

REPO = Path(__file__).resolve().parents[2]
DEMO_LORA = REPO / "assets" / "demo" / "loras" / "blue_background.safetensors"
HELD_OUT_BAR = 0.85
TRAINED_THREADS = 2  # torch.get_num_threads() when the committed LoRA was trained

pytestmark = pytest.mark.skipif(not DEMO_LORA.is_file() or not pp.BASE.is_file(), reason="the demo LoRA is not committed")


def test_the_demo_lora_retrains_bit_for_bit(tmp_path):
    """`python -m train.prior_preservation --only mixed --no-score --lora-out ...` (README: Fine-tune)
    with demo_lora.yaml as committed: the same tensors, bit for bit at the thread count it was
    trained with (2, this machine's cores). CPU kernels split sums by thread, so another count gives
    other low bits: 1 thread differed by 3.3e-5 at most (adapter values up to ~0.1), hence the
    tolerance there. The file's bytes are not compared: safetensors writes the metadata entries in
    no fixed order."""
    folder = pp.write_concept(tmp_path / "blue_background")
    run = tmp_path / "run"
    pp.train(run, pp.mixed_sources(folder), ["run.save_every=1000000"])
    latest = run / "checkpoints" / "latest"
    trained = load_file(str(next(p for p in (latest / "lora_ema.safetensors", latest / "lora.safetensors") if p.is_file())))
    committed = load_file(str(DEMO_LORA))
    assert trained.keys() == committed.keys()
    hint = ("retraining the demo LoRA gave other adapters: demo_lora.yaml or train/ changed since it was committed; "
            "rerun the README's command to update assets/demo/loras/blue_background.safetensors")
    for key in committed:
        if torch.get_num_threads() == TRAINED_THREADS:
            assert torch.equal(trained[key], committed[key]), f"{key}: {hint}"
        else:
            torch.testing.assert_close(trained[key], committed[key], atol=1e-4, rtol=0, msg=f"{key}: {hint}")


def test_the_demo_lora_is_small_and_matches_the_config():
    tensors = load_file(str(DEMO_LORA))
    rank = yaml.safe_load(pp.CONFIG.read_text())["model"]["lora_rank"]
    assert {t.shape[0] for k, t in tensors.items() if k.endswith("lora_down.weight")} == {rank}
    assert DEMO_LORA.stat().st_size < 1_000_000


def test_the_demo_lora_learns_the_concept_and_keeps_the_held_out_accuracy():
    model = pp.load_with_lora(DEMO_LORA)
    assert pp.background_right(model, pp.CONCEPT) >= 20, "the LoRA should draw the blue background in ≥ 20 of 24 prompts"
    assert pp.background_right(pp.load_with_lora(DEMO_LORA, strength=0.0), pp.CONCEPT) == 0
    accuracy = pp.held_out(model)
    assert accuracy >= HELD_OUT_BAR, f"held-out accuracy with the LoRA {accuracy:.3f} < {HELD_OUT_BAR}"


def test_held_out_is_measured_on_the_original_prompts(tmp_path):
    """The concept's background exists for writing its images and counting blue corners only: the
    held-out set keeps the original backgrounds (with blue, it would ask for blue shapes on blue)."""
    from train import shapes
    from train.evaluate import prompt_set

    before = dict(shapes.BACKGROUNDS)
    pp.write_concept(tmp_path / "concept", count=2)
    assert (tmp_path / "concept" / "000.txt").read_text().endswith("on a blue background")
    assert shapes.BACKGROUNDS == before and pp.CONCEPT not in before
    assert {s.background for s in prompt_set("held_out")} == set(before)
