"""Every workflow in ComfyUI 0.3.64's web frontend, opened and run the way a person does.

For each workflows/*.json, opened through Workflow › Open (the file input) and by drag-and-drop:
no missing-node dialog (no dialog at all), every node type registered, no node in error, no page
error, app.graphToPrompt() equal to the API twin in workflows/api/, every widget value valid
(combo values listed by the server, numbers within their bounds) and no two nodes overlapping
once the frontend has sized them. Each demo_shapes_* workflow is then queued with the Run button:
/history says success and holds images of the size and count its latent asks for.
Screenshots of each loaded workflow and each result go to the folder printed at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from frontend import click_run, fit_view, load_by_drop, load_by_file_input, probe

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
DEMOS = [p for p in WORKFLOWS if p.stem.startswith("demo_shapes_")]
LOADERS = {"file_input": load_by_file_input, "drop": load_by_drop}


def overlaps(nodes: list[dict]) -> list[str]:
    """Pairs of nodes whose rectangles (title bar included) share area."""
    found = []
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["rect"]
        for b in nodes[i + 1:]:
            bx, by, bw, bh = b["rect"]
            w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
            if w > 0 and h > 0:
                found.append(f"{a['type']} #{a['id']} {a['rect']} and {b['type']} #{b['id']} {b['rect']} overlap by {w:.0f}×{h:.0f}")
    return found


def invalid_widgets(nodes: list[dict]) -> list[str]:
    bad = []
    for node in nodes:
        for w in node["widgets"]:
            where = f"{node['type']} #{node['id']}.{w['name']} = {w['value']!r}"
            if w["type"] == "combo" and w["value"] not in w["values"]:
                bad.append(f"{where} is not one of {w['values'][:12]}")
            if isinstance(w["value"], (int, float)) and not isinstance(w["value"], bool):
                if w.get("min") is not None and w["value"] < w["min"] or w.get("max") is not None and w["value"] > w["max"]:
                    bad.append(f"{where} outside [{w.get('min')}, {w.get('max')}]")
    return bad


def differences_from_twin(output: dict, twin: dict, object_info: dict) -> list[str]:
    """Where graphToPrompt's output differs from the API twin. The frontend gives every optional
    widget a value (the API twins leave the unused ones out): such an extra input must be an
    optional input of that node at its default (a combo's default is its first choice)."""
    diffs = []
    if set(output) != set(twin):
        return [f"node ids {sorted(output)} != {sorted(twin)}"]
    for nid, node in twin.items():
        got = output[nid]
        if got["class_type"] != node["class_type"]:
            diffs.append(f"#{nid}: {got['class_type']} != {node['class_type']}")
            continue
        optional = object_info[node["class_type"]]["input"].get("optional", {})
        for name in sorted(set(got["inputs"]) | set(node["inputs"])):
            if name in node["inputs"]:
                if got["inputs"].get(name) != node["inputs"][name]:
                    diffs.append(f"#{nid} {node['class_type']}.{name}: {got['inputs'].get(name)!r} != {node['inputs'][name]!r}")
                continue
            spec = optional.get(name)
            if spec is None:
                diffs.append(f"#{nid} {node['class_type']}.{name} = {got['inputs'][name]!r} is not in the twin nor optional")
                continue
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
            if got["inputs"][name] != default:
                diffs.append(f"#{nid} {node['class_type']}.{name} = {got['inputs'][name]!r}, not its default {default!r}")
    return diffs


@pytest.mark.parametrize("how", list(LOADERS))
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_cleanly(page, browser_server, object_info, shots_dir, workflow, how):
    errors_before = len(page.errors)
    LOADERS[how](page, workflow)
    facts = probe(page)
    fit_view(page)
    page.screenshot(path=str(shots_dir / f"{workflow.stem}.{how}.png"))
    (shots_dir / f"{workflow.stem}.{how}.nodes.json").write_text(json.dumps(facts["nodes"], indent=1))

    assert not facts["dialogs"], f"a dialog opened on load: {facts['dialogs']}"
    assert [n["type"] for n in facts["nodes"] if not n["registered"]] == []
    assert [n["type"] for n in facts["nodes"] if n["has_errors"]] == []
    assert page.errors[errors_before:] == [], "page errors while loading"
    twin = json.loads((REPO / "workflows" / "api" / workflow.name).read_text())
    assert differences_from_twin(facts["output"], twin, object_info) == []
    assert invalid_widgets(facts["nodes"]) == []
    assert overlaps(facts["nodes"]) == []


@pytest.fixture(scope="module")
def object_info(browser_server) -> dict:
    return browser_server.object_info()


def test_startup_has_no_page_error_from_the_pack(page):
    """Page errors before any workflow opened: none may come from the pack (it ships no web
    extension, so one would come from how its nodes are defined)."""
    ours = [e for e in page.startup_errors if "lumina" in e.lower()]
    assert ours == [], ours


def asked_images(api: dict) -> tuple[tuple[int, int], int]:
    """(width, height) and number of the images a demo graph asks Save Image for: the size of the
    Image Scale (or of the latent) feeding it; the latent's batch (an edit: the one input image);
    Save Animated WEBP writes one file of the frames."""
    [save] = [n for n in api.values() if n["class_type"] in ("SaveImage", "SaveAnimatedWEBP")]
    source = api[save["inputs"]["images"][0]]
    latents = [n["inputs"] for n in api.values() if n["class_type"] in ("LuminaEmptyLatent", "LuminaEmptyVideoLatent")]
    sized = source["inputs"] if source["class_type"] == "ImageScale" else latents[0]
    count = 1 if save["class_type"] == "SaveAnimatedWEBP" or not latents else latents[0]["batch_size"]
    return (sized["width"], sized["height"]), count


def _wait_history(server, prompt_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.history(prompt_id).get(prompt_id)
        if entry is not None and entry.get("status", {}).get("completed") is not None:
            if entry["status"].get("status_str") in ("success", "error"):
                return entry
        time.sleep(0.25)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


@pytest.mark.parametrize("workflow", DEMOS, ids=lambda p: p.stem)
def test_demo_runs_from_the_run_button(page, browser_server, shots_dir, workflow):
    load_by_file_input(page, workflow)
    queued = click_run(page)
    assert not queued.get("node_errors"), queued
    entry = _wait_history(browser_server, queued["prompt_id"])
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]

    size, count = asked_images(json.loads((REPO / "workflows" / "api" / workflow.name).read_text()))
    images = browser_server.output_files(entry)
    assert len(images) == count
    for i, path in enumerate(images):
        with Image.open(path) as img:
            assert img.size == size
        shutil.copy(path, shots_dir / f"{workflow.stem}.result{i}.png")
    page.wait_for_timeout(500)  # the frontend shows the images in Save Image
    fit_view(page)
    page.screenshot(path=str(shots_dir / f"{workflow.stem}.run.png"))
