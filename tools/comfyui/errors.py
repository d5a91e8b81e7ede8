"""What a ComfyUI runner raises: the process failed, the graph was refused, or a node raised."""

from __future__ import annotations

import json
from typing import Any, Mapping

from .graphs import execution_error


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
