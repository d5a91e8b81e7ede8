"""The README's "Fine-tune" section, followed literally, and the committed demo LoRA in ComfyUI.

`test_the_readme_fine_tune_commands_work_as_written` reads the commands of the section's first
```bash block from README.md (so it breaks when the README changes) and runs them one by one, as
written, from a copy of the repository root (links to train/, lumina/, assets/, scripts/, tools/) that
holds a small generated `my_concept/` folder, the way a user would. Two things are not literal:
`.venv/bin/python` is this interpreter and `bash scripts/demo` is `scripts/run_demo.py` run by it (what
scripts/demo runs once its venv exists); `fit` gets the quick-try override the README names, and the
demo its PNGs in the temp folder (`--out`). Then the LoRA must change the picture: the same demo
command at `--lora-strength 0` gives another PNG.

`test_the_demo_lora_draws_its_concept` runs workflows/api/demo_shapes_lora.json (the committed
assets/demo/loras/blue_background.safetensors through core LoraLoaderModelOnly): a blue background at
strength 1, none at strength 0.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
QUICK = "optim.steps=4"  # the README's quick-try override of `fit`
LINKED = ("train", "lumina", "assets", "scripts", "tools")
BLUE, WHITE = np.array([30, 70, 230]), np.array([255, 255, 255])  # train.shapes.COLOURS["blue"], the white background


def fine_tune_section() -> str:
    text = README.read_text()
    start = text.index("### Fine-tune")
    end = re.compile(r"^##{1,2} ", re.M).search(text, start + 1)
    return text[start:end.start() if end else len(text)]


def readme_commands() -> list[list[str]]:
    """The first ```bash block of the section, one argv per line (comments dropped)."""
    block = re.search(r"```bash\n(.*?)```", fine_tune_section(), re.S)
    assert block, "README 'Fine-tune' has no ```bash block of commands"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if shlex.split(line, comments=True)]


def as_run_here(argv: list[str]) -> list[str]:
    """A README command as this test runs it (see the module doc)."""
    if argv[:2] == ["bash", "scripts/demo"]:
        return [sys.executable, "scripts/run_demo.py", *argv[2:]]
    assert argv[0] == ".venv/bin/python", f"unexpected README command {shlex.join(argv)}"
    return [sys.executable, *argv[1:]]


def corner_colour(png: Path) -> np.ndarray:
    with Image.open(png) as img:
        px = np.asarray(img.convert("RGB"), dtype=np.float64)
    k = px.shape[0] // 10
    return np.stack([px[:k, :k], px[:k, -k:], px[-k:, :k], px[-k:, -k:]]).reshape(-1, 3).mean(0)


def test_the_readme_lists_the_whole_chain():
    """fit → sample → export → scripts/demo --lora, and the quick-try override is documented."""
    steps = [argv[:4] if argv[0] != "bash" else argv[:2] for argv in readme_commands()]
    assert steps[0] == [".venv/bin/python", "-m", "train", "fit"]
    assert [s[3] for s in steps[1:3]] == ["sample", "export"] and steps[3] == ["bash", "scripts/demo"]
    assert "--lora" in readme_commands()[3]
    assert f"`{QUICK}`" in fine_tune_section(), f"the README should name the quick-try override {QUICK}"


def test_the_readme_fine_tune_commands_work_as_written(tmp_path):
    from tools.comfyui import find_comfyui
    from train.prior_preservation import write_concept

    if find_comfyui() is None:
        pytest.skip("the vendored ComfyUI is not installed (bash .ci/venv)")
    root = tmp_path / "repo"
    root.mkdir()
    for name in LINKED:
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    write_concept(root / "my_concept", count=8)  # "your images": 8 shapes on a blue background, with captions
    out = tmp_path / "demo_output"
    started = time.perf_counter()
    commands = readme_commands()
    for argv in commands:
        argv = as_run_here(argv)
        if argv[1:4] == ["-m", "train", "fit"]:
            argv.append(QUICK)
        if argv[1] == "scripts/run_demo.py":
            demo = argv
            argv = [*argv, "--out", str(out / "strength_1")]
        done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    run = root / "runs" / "demo_lora"
    assert list((run / "samples" / "cli").glob("*.png")), "train sample wrote no PNG"
    lora = root / commands[2][commands[2].index("--out") + 1]
    assert lora.is_file() and (run / "checkpoints" / "latest" / "lora.safetensors").is_file()
    done = subprocess.run([*demo, "--lora-strength", "0", "--out", str(out / "strength_0")], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    [with_lora] = sorted((out / "strength_1").glob("*.png"))
    [without] = sorted((out / "strength_0").glob("*.png"))
    a = np.asarray(Image.open(with_lora).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(without).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() > 0, "the LoRA did not change the picture"
    print(f"README fine-tune chain: {time.perf_counter() - started:.1f} s")


def test_the_demo_lora_draws_its_concept(comfy_server, demo_files, unique_prefix):
    if not demo_files:
        pytest.skip("the demo model is not in assets/demo")
    graph = json.loads((REPO / "workflows" / "api" / "demo_shapes_lora.json").read_text())
    [lora] = [n for n in graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert "blue background" in next(n for n in graph.values() if n["class_type"] == "LuminaTextEncode")["inputs"]["prompt"]
    corners = {}
    for strength in (1.0, 0.0):
        lora["inputs"]["strength_model"] = strength
        graph["8"]["inputs"]["filename_prefix"] = f"{unique_prefix}_{strength:g}"
        [png] = comfy_server.output_files(comfy_server.run(graph, timeout=300))
        corners[strength] = corner_colour(png)
    assert np.abs(corners[1.0] - BLUE).max() < 60, f"strength 1: corners {corners[1.0].round()} are not the blue background"
    assert np.abs(corners[0.0] - BLUE).max() > 60, f"strength 0: corners {corners[0.0].round()} are blue without the LoRA"
