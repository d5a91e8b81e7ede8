"""The committed demo models are reproducible from their documented commands.

A full retrain takes about an hour each here, so it is recorded, not tested (README: the demo): the
retrained weights were compared with `python -m train.compare`. What the suite checks is that the
documented command still walks the committed run's path: its first 50 steps give the logged loss
and gradient norm of the run that made the committed model (tests/fixtures/demo_training/, the
runs' whole log.jsonl), bit for bit at the thread count they were trained with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from train import compare
from train.sample import CLIError

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "tests" / "fixtures" / "demo_training"
TRAINED_THREADS = 2  # torch.get_num_threads() when the committed demo models were trained
STEPS = 50  # the first logged step


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name, model", [("shapes_demo", "lumina_shapes"), ("shapes_video_demo", "lumina_shapes_video")])
def test_the_documented_command_retraces_the_committed_run(tmp_path, name, model):
    if not (REPO / "assets" / "demo" / model).is_dir():
        pytest.skip("the demo model is not committed")
    committed = _log(LOGS / f"{name}.log.jsonl")
    done = subprocess.run([sys.executable, "-m", "train", "fit", "--config", f"train/configs/{name}.yaml",
                           f"optim.steps={STEPS}", f"run.out_dir={tmp_path / 'run'}", "run.progress=false",
                           "run.resume=false", "run.save_every=1000000"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = _log(tmp_path / "run" / "log.jsonl")
    first = next(entry for entry in committed if entry["step"] == STEPS)
    assert ours[-1]["step"] == STEPS
    hint = (f"train/configs/{name}.yaml or train/ changed since assets/demo/{model} was trained; "
            f"retrain it with the README's command (and update {LOGS.relative_to(REPO)}/{name}.log.jsonl)")
    for key in ("loss", "grad_norm", "lr"):
        if torch.get_num_threads() == TRAINED_THREADS:
            assert ours[-1][key] == first[key], f"{key}: {ours[-1][key]!r} != {first[key]!r}: {hint}"
        else:  # CPU kernels split sums by thread: another count changes the low bits
            assert ours[-1][key] == pytest.approx(first[key], rel=1e-3), hint


def test_the_logs_are_whole_runs():
    for name, steps in (("shapes_demo", 6800), ("shapes_video_demo", 3000)):
        log = _log(LOGS / f"{name}.log.jsonl")
        assert [entry["step"] for entry in log] == list(range(50, steps + 1, 50)), name


def test_compare_tells_identical_from_different(tmp_path):
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    same = compare.compare_state_dicts(a, {k: v.clone() for k, v in a.items()})
    assert same.identical and same.max_abs_diff == 0 and same.max_abs_weight == 5
    b = {"w": a["w"].clone(), "b": a["b"] + torch.tensor([0, 0.25, 0])}
    other = compare.compare_state_dicts(a, b)
    assert not other.identical and other.max_abs_diff == 0.25 and other.worst_key == "b"

    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    assert compare.main([str(tmp_path / "a.safetensors"), str(tmp_path / "a.safetensors")]) == 0
    assert compare.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]) == 1
    assert compare.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--atol", "0.3"]) == 0


def test_compare_names_what_differs(tmp_path):
    with pytest.raises(CLIError, match=r"only in the first \['extra'\]"):
        compare.compare_state_dicts({"w": torch.ones(2), "extra": torch.ones(1)}, {"w": torch.ones(2)})
    with pytest.raises(CLIError, match=r"w: \(2,\) torch.float32 against \(3,\)"):
        compare.compare_state_dicts({"w": torch.ones(2)}, {"w": torch.ones(3)})
    with pytest.raises(CLIError, match="no such file or folder"):
        compare.weights_file(tmp_path / "missing")
    with pytest.raises(SystemExit) as exit_:
        compare.main([str(tmp_path / "missing"), str(tmp_path / "missing")])
    assert exit_.value.code == 2
