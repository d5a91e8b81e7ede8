"""`ComfyServer`: ComfyUI's own main.py in a child process, driven over HTTP like the web UI
(`POST /prompt`, poll `GET /history/<id>`). Boot ≈ 3 s.

    server = ComfyServer(workspace, comfyui_dir); server.start()
    entry = server.run(graph)                       # history entry; raises on failure
    pngs = server.output_files(entry, node_id="9")  # SaveImage files of node "9"
    server.stop()
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

from .errors import ComfyError, ComfyExecutionError, ComfyValidationError
from .graphs import Graph, fresh_graph, rekey, rekey_messages
from .runner import ComfyRunner
from .workspace import Workspace, free_port


class ComfyServer(ComfyRunner):
    """ComfyUI's main.py in a child process, driven over HTTP."""

    def __init__(self, workspace: Workspace, comfyui_dir: Path, python: str = sys.executable,
                 extra_args: Iterable[str] = (), env: Mapping[str, str] | None = None, name: str = "server"):
        super().__init__(workspace, comfyui_dir, python=python, env=env, name=name)
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self._id_maps: dict[str, dict[str, str]] = {}  # prompt_id -> queued id -> caller's id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle hooks ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        ws = self.workspace
        return [
            self.python, str(self.comfyui_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(self.port), "--disable-auto-launch", "--dont-print-server",
            "--extra-model-paths-config", str(ws.extra_model_paths),
            "--output-directory", str(ws.output_dir), "--input-directory", str(ws.input_dir),
            "--temp-directory", str(ws.temp_arg), *self.release_flags(), *self.extra_args,
        ]

    def release_flags(self) -> list[str]:
        """Flags only newer ComfyUI has, keeping every write out of its (possibly read-only) folder:
        the user folder (settings, workflows) and an in-memory database (its default file lies
        beside main.py)."""
        cli = (self.comfyui_dir / "comfy" / "cli_args.py").read_text()
        flags = []
        if "--user-directory" in cli:
            self.workspace.user_dir.mkdir(parents=True, exist_ok=True)
            flags += ["--user-directory", str(self.workspace.user_dir)]
        if "--database-url" in cli:
            flags += ["--database-url", "sqlite:///:memory:"]
        return flags

    def _spawn(self, log_file: IO[bytes]) -> subprocess.Popen:
        self.port = free_port()  # a new one per launch: an earlier server may still hold the last
        log_file.write(f"$ {' '.join(self.command())}\n".encode())
        log_file.flush()
        return self._popen(stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ComfyError(f"ComfyUI exited during boot (code {code})", self.log_tail(80))
            try:
                self.get("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                if time.monotonic() > deadline:
                    raise ComfyError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s", self.log_tail(80))
                time.sleep(0.05)

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
            payload = dict(payload, node_errors=rekey(payload["node_errors"], back))
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
        entry["outputs"] = rekey(entry.get("outputs"), back)
        if entry.get("status"):
            entry["status"]["messages"] = rekey_messages(entry["status"].get("messages"), back)
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
