"""`InProcessComfy`: ComfyUI's executor inside a long-lived driver process (driver.py) that reads
one JSON request per line on stdin and answers one JSON line on stdout.

Same node loading, same validation, same executor as the HTTP server, but a run also returns a
summary of *every* node's outputs (tensor shapes and statistics), the progress/executing events,
can dump output tensors to safetensors, and can interrupt after N progress steps.

    entry = runner.run(graph, probe=True)
    entry["probe"]["3"]  # summaries of node 3's outputs: [{"type": "tensor", "shape": [...], ...}]
    entry["events"]      # [["progress", {"value", "max", "node"}], ["executing", ...], ...]
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

from .errors import ComfyError, ComfyExecutionError, ComfyValidationError
from .graphs import Graph, fresh_graph, rekey, rekey_messages
from .runner import ComfyRunner
from .workspace import PACK_NAME, Workspace

DRIVER = Path(__file__).resolve().with_name("driver.py")


class InProcessComfy(ComfyRunner):
    """ComfyUI's executor in a separate driver process (driver.py), one JSON line per call."""

    def __init__(self, workspace: Workspace, comfyui_dir: Path, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, name: str = "inprocess"):
        super().__init__(workspace, comfyui_dir, python=python, env=env, name=name)
        self.dump_dir = workspace.root / "dumps"
        self.pack_loaded: bool | None = None
        self._lines: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- lifecycle hooks ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        ws = self.workspace
        return [
            self.python, str(DRIVER), "--comfyui", str(self.comfyui_dir),
            "--extra-model-paths-config", str(ws.extra_model_paths),
            "--output-directory", str(ws.output_dir), "--input-directory", str(ws.input_dir),
            "--temp-directory", str(ws.temp_arg), "--user-directory", str(ws.user_dir),
            "--pack", PACK_NAME,
        ]

    def _spawn(self, log_file: IO[bytes]) -> subprocess.Popen:
        # stdout is the protocol; the driver sends everything ComfyUI prints to stderr, the log
        proc = self._popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True, bufsize=1)
        threading.Thread(target=self._reader, args=(proc,), daemon=True).start()
        return proc

    def _reader(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _await_ready(self, timeout: float) -> None:
        hello = self._receive(timeout)
        if hello.get("event") != "ready":
            raise ComfyError(f"in-process driver did not start: {hello}", self.log_tail(80))
        self.pack_loaded = hello.get("pack_loaded")

    def _request_exit(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the driver exits by itself
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass

    # -- the protocol ------------------------------------------------------------------------------------
    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise ComfyError(f"in-process driver gave no answer within {timeout:.0f} s (stopped)", self.log_tail(60))
        if line is None:
            raise ComfyError(f"in-process driver exited (code {self.proc and self.proc.poll()})", self.log_tail(80))
        return json.loads(line)

    def call(self, op: str, timeout: float = 120.0, **kwargs: Any) -> dict[str, Any]:
        """One request to the driver, its reply (raises ComfyError on a harness failure)."""
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

    # -- requests ----------------------------------------------------------------------------------------
    def object_info(self, node: str | None = None) -> dict[str, Any]:
        info = self.call("object_info", node=node)["info"]
        return info.get(node, {}) if node is not None else info

    def list_models(self, folder: str, files: bool = True) -> dict[str, Any]:
        """folder_paths' view of a model folder name: {"known", "paths", "files"} (what a loader
        node's INPUT_TYPES would list via folder_paths.get_filename_list; files=False skips the
        walk, e.g. for "custom_nodes", whose listing walks the whole repository)."""
        return self.call("list_models", folder=folder, files=files)

    def call_in_comfy(self, file: str | os.PathLike, function: str, timeout: float = 120.0, **kwargs: Any) -> Any:
        """Run `function(**kwargs)` from a helper file *inside* the ComfyUI process (ComfyUI's
        modules, the loaded pack in sys.modules (as "comfyui_lumina_t2x" in the vendored ComfyUI, under
        its folder's path in 0.3.64), folder_paths configured) and
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

        def ids(sel: bool | Iterable[str]) -> bool | list[str]:
            if sel is True or sel is False:
                return sel
            return [forward.get(str(s), str(s)) for s in sel]

        reply = self.call("run", timeout=timeout, graph=queued, probe=ids(probe), dump=ids(dump),
                          dump_dir=str(self.dump_dir), interrupt_after_progress=interrupt_after_progress)
        for key in ("outputs", "node_errors", "probe", "dumps"):
            if key in reply:
                reply[key] = rekey(reply[key], back)
        reply["events"] = rekey_messages(reply.get("events"), back)
        if reply.get("status"):
            reply["status"]["messages"] = rekey_messages(reply["status"].get("messages"), back)
        reply["queued_ids"] = back
        if not reply.get("valid", True):
            raise ComfyValidationError({"error": reply.get("error"), "node_errors": reply.get("node_errors")}, 400)
        if reply.get("node_errors") and not partial_ok:
            raise ComfyValidationError({"error": reply.get("error"), "node_errors": reply.get("node_errors")}, 200)
        if check and (reply.get("status") or {}).get("status_str") != "success":
            raise ComfyExecutionError(reply, self.log_tail(40))
        return reply
