"""The lifecycle both ComfyUI runners share: launch a child process, wait until it is ready, keep
its log, stop it (SIGTERM, then SIGKILL) — and the registry the pytest hooks read logs from.

A subclass says how to talk to its process through four hooks: `command()`, `_spawn()` (the
streams), `_await_ready()` and, optionally, `_request_exit()` (a polite shutdown before SIGTERM).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Mapping, TypeVar

from .workspace import PACK_NAME, Workspace, comfy_env

_R = TypeVar("_R", bound="ComfyRunner")
_ACTIVE: list["ComfyRunner"] = []  # started runners, for the pytest hook that attaches their log to failures


def active_runners() -> list["ComfyRunner"]:
    """Runners launched and not stopped yet (their logs are worth showing on a test failure)."""
    return list(_ACTIVE)


class ComfyRunner:
    """One ComfyUI child process with this repository linked as a pack in `workspace`.

    `launch()` starts it without waiting, so callers can overlap work with the boot; `wait_ready()`
    blocks until it answers; `start()` is both; `stop()` ends it and is safe to call twice.
    Everything the process prints goes to `log_path`."""

    def __init__(self, workspace: Workspace, comfyui_dir: Path, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, name: str = "runner"):
        self.workspace = workspace
        self.comfyui_dir = Path(comfyui_dir)
        self.python = python
        self.extra_env = dict(env or {})
        self.log_path = workspace.logs_dir / f"comfyui-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.boot_seconds: float | None = None
        self._started_at = 0.0
        self._log_file: IO[bytes] | None = None
        self._log_mark = 0

    # -- hooks --------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The child's argv."""
        raise NotImplementedError

    def _spawn(self, log_file: IO[bytes]) -> subprocess.Popen:
        """Start the child (use `_popen`, which sets its cwd and environment)."""
        raise NotImplementedError

    def _await_ready(self, timeout: float) -> None:
        """Block until the child can take work; raise ComfyError if it cannot."""
        raise NotImplementedError

    def _request_exit(self) -> None:
        """Ask a running child to exit by itself (before SIGTERM); nothing by default."""

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _popen(self, **streams: Any) -> subprocess.Popen:
        return subprocess.Popen(self.command(), cwd=self.workspace.run_dir, env=comfy_env(self.extra_env), **streams)

    def launch(self) -> None:
        """Start the process without waiting (see `wait_ready`), so callers can overlap work."""
        if self.proc is not None:
            return
        self._log_file = open(self.log_path, "ab")
        self._started_at = time.perf_counter()
        self.proc = self._spawn(self._log_file)
        if self not in _ACTIVE:
            _ACTIVE.append(self)
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from launch until the process was ready."""
        self._await_ready(timeout)
        self.boot_seconds = time.perf_counter() - self._started_at
        return self.boot_seconds

    def start(self: _R, timeout: float = 120.0) -> _R:
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._request_exit()
        proc, self.proc = self.proc, None
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        try:
            if proc is not None and proc.poll() is None:
                self._terminate(proc, timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    @staticmethod
    def _terminate(proc: subprocess.Popen, timeout: float) -> None:
        try:
            os.kill(proc.pid, signal.SIGTERM)  # our own child, by its PID
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    # -- the log ------------------------------------------------------------------------------------------
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

    # -- results ------------------------------------------------------------------------------------------
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
