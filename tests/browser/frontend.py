"""ComfyUI's web frontend driven the way a person uses it (Playwright, headless Chromium).

    open_app(page, server_url)          settings for a fresh user, then the page, then the app ready
    load_by_file_input(page, path)      Workflow › Open: the frontend's hidden file input
    load_by_drop(page, path)            a file dropped on the canvas
    facts = probe(page)                 nodes (rects after layout, widgets), open dialogs, graphToPrompt()
    fit_view(page); click_run(page)
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

PROBE_JS = (Path(__file__).with_name("probe.js")).read_text()
APP_READY = "window.app && app.graph && Object.keys(LiteGraph.registered_node_types).length > 100"


def open_app(page, url: str) -> None:
    # a fresh user folder would open the Templates dialog over the canvas
    body = json.dumps({"Comfy.TutorialCompleted": True}).encode()
    req = urllib.request.Request(url + "/api/settings", data=body, method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    page.goto(url)
    page.wait_for_function(APP_READY, timeout=120_000)


def _clear(page) -> None:
    page.evaluate("() => app.graph.clear()")


def _wait_loaded(page, node_ids: list[int]) -> None:
    page.wait_for_function(
        "(ids) => app.graph.nodes.length === ids.length && ids.every((id) => app.graph.getNodeById(id))",
        arg=node_ids, timeout=30_000)


def load_by_file_input(page, path: Path) -> None:
    _clear(page)
    page.set_input_files("#comfy-file-input", str(path))
    _wait_loaded(page, [n["id"] for n in json.loads(path.read_text())["nodes"]])


DROP_JS = """([name, text]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, { type: "application/json" }));
  const canvas = document.getElementById("graph-canvas");
  canvas.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
}"""


def load_by_drop(page, path: Path) -> None:
    _clear(page)
    page.evaluate(DROP_JS, [path.name, path.read_text()])
    _wait_loaded(page, [n["id"] for n in json.loads(path.read_text())["nodes"]])


def probe(page) -> dict:
    return page.evaluate(PROBE_JS)


FIT_JS = """() => {
  const nodes = app.graph.nodes;
  const r = nodes.map((n) => Array.from(n.boundingRect));
  const x0 = Math.min(...r.map((b) => b[0])), y0 = Math.min(...r.map((b) => b[1]));
  const x1 = Math.max(...r.map((b) => b[0] + b[2])), y1 = Math.max(...r.map((b) => b[1] + b[3]));
  const el = app.canvas.canvas, margin = 20;
  const scale = Math.min((el.clientWidth - 2 * margin) / (x1 - x0), (el.clientHeight - 2 * margin) / (y1 - y0), 1);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset[0] = margin / scale - x0;
  app.canvas.ds.offset[1] = margin / scale - y0;
  app.graph.setDirtyCanvas(true, true);
}"""


def fit_view(page) -> None:
    """The whole graph in view (for the screenshot)."""
    page.evaluate(FIT_JS)
    page.wait_for_timeout(300)


def click_run(page) -> dict:
    """Click the Run button; the JSON the server answered to the POST /api/prompt it caused."""
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST", timeout=30_000) as info:
        page.get_by_role("button", name="Run", exact=True).first.click()
    response = info.value
    assert response.status == 200, f"POST /api/prompt -> {response.status}: {response.text()[:2000]}"
    return response.json()
