"""ComfyUI's executor in this process, driven by JSON lines on stdin (see inprocess.InProcessComfy).

Started by `InProcessComfy` as a separate python process, never imported: ComfyUI's top-level
modules (`nodes`, `folder_paths`, `comfy`, `execution`, `server`) go on *this* process' sys.path
only, and this file's own folder comes off it first (its server.py would shadow ComfyUI's). So
this file imports nothing from the `tools` package. It boots like main.py (args parsed with --cpu,
folders set, extra_model_paths yaml, comfy_extras + custom_nodes via nodes.init_custom_nodes, the
pack through its custom_nodes symlink), then answers one request per line:

    {"id": 1, "op": "ping"}
    {"id": 2, "op": "object_info", "node": "KSampler" | null}
    {"id": 3, "op": "validate", "graph": {...}}
    {"id": 4, "op": "list_models", "folder": "lumina"}  -> folder_paths' paths and file list
    {"id": 6, "op": "call", "file": "/abs/helper.py", "function": "f", "kwargs": {...}}
        -> {"result": {"ok": true, "value": <f's JSON-able return>} | {"ok": false, "error", "traceback"}}
    {"id": 5, "op": "run", "graph": {...}, "probe": true | [ids], "dump": true | [ids],
     "dump_dir": "...", "interrupt_after_progress": null | N}

Replies are single JSON lines on the original stdout; everything ComfyUI prints goes to stderr
(the log file). The first line is {"event": "ready", "pack_loaded": bool, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import math
import os
import sys
import time
import traceback
from typing import Any, Callable, Iterable, TextIO


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--comfyui", required=True)
    p.add_argument("--extra-model-paths-config", required=True)
    p.add_argument("--output-directory", required=True)
    p.add_argument("--input-directory", required=True)
    p.add_argument("--temp-directory", required=True)
    p.add_argument("--user-directory", required=True)
    p.add_argument("--pack", required=True)
    return p.parse_args(argv)


# -- JSON-able values ---------------------------------------------------------------------------------

def summarize(value: Any, depth: int = 0) -> Any:
    """A JSON-friendly description of a node output value (tensors: shape, dtype and statistics)."""
    import torch

    if depth > 4:
        return {"type": type(value).__name__}
    if isinstance(value, torch.Tensor):
        out = {"type": "tensor", "shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", ""),
               "device": str(value.device)}
        if value.numel() and (value.is_floating_point() or value.is_complex()):
            v = value.detach().float()
            finite = torch.isfinite(v)
            out["finite"] = bool(finite.all())
            vf = v[finite] if not out["finite"] else v
            if vf.numel():
                out.update(mean=float(vf.mean()), std=float(vf.std()) if vf.numel() > 1 else 0.0,
                           min=float(vf.min()), max=float(vf.max()))
        elif value.numel():
            out.update(min=int(value.min()), max=int(value.max()))
        return out
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): summarize(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        items = [summarize(v, depth + 1) for v in list(value)[:20]]
        return items if len(value) <= 20 else items + [f"... {len(value) - 20} more"]
    return {"type": f"{type(value).__module__}.{type(value).__qualname__}", "repr": repr(value)[:200]}


def _tensors(value: Any, prefix: str, out: dict) -> None:
    """Every tensor inside `value`, keyed "<prefix>.<dict key or index>..." (for safetensors)."""
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().to("cpu").contiguous().clone()
    elif isinstance(value, dict):
        for k, v in value.items():
            _tensors(v, f"{prefix}.{k}", out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _tensors(v, f"{prefix}.{i}", out)


def _jsonable(data: Any) -> Any:
    try:
        json.dumps(data)
        return data
    except (TypeError, ValueError):
        return summarize(data)


# -- booting ComfyUI ------------------------------------------------------------------------------------

def open_protocol() -> TextIO:
    """The original stdout, kept for replies; anything printed from here on (ComfyUI, nodes, C
    libraries) lands in stderr, the log."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def load_extra_path_config(folder_paths: Any, yaml_path: str) -> None:
    """main.py's load_extra_path_config (not importable without running main.py's import side effects)."""
    import yaml

    with open(yaml_path) as stream:
        config = yaml.safe_load(stream)
    for conf in config.values():
        if conf is None:
            continue
        base_path = conf.pop("base_path", None)
        for folder_name, paths in conf.items():
            for path in str(paths).split("\n"):
                if path:
                    folder_paths.add_model_folder_path(folder_name, os.path.join(base_path, path) if base_path else path)


def configure_comfyui(opts: argparse.Namespace) -> None:
    """What main.py does before loading nodes: sys.path, parsed args (--cpu), folders, model paths."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # not tools/comfyui
    sys.path.insert(0, opts.comfyui)
    sys.argv = [os.path.join(opts.comfyui, "main.py"), "--cpu", "--disable-auto-launch"]

    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    if os.path.isfile(os.path.join(opts.comfyui, "utils", "__init__.py")):
        # newer ComfyUI's utils/ package, imported before nodes.py puts <comfyui>/comfy in front of
        # sys.path (where `utils` is comfy/utils.py), as main.py does
        import utils.install_util  # noqa: F401

    folder_paths.set_output_directory(os.path.abspath(opts.output_directory))
    folder_paths.set_input_directory(os.path.abspath(opts.input_directory))
    folder_paths.set_temp_directory(os.path.join(os.path.abspath(opts.temp_directory), "temp"))
    os.makedirs(opts.user_directory, exist_ok=True)
    folder_paths.user_directory = os.path.abspath(opts.user_directory)  # before app.user_manager imports it
    load_extra_path_config(folder_paths, opts.extra_model_paths_config)


class Recorder:
    """Stands in for PromptServer: the executor and nodes report to it."""

    def __init__(self) -> None:
        from aiohttp import web

        self.routes = web.RouteTableDef()  # packs may register routes at import
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.events: list = []
        self.progress_count = 0
        self.interrupt_after: int | None = None
        self.prompt_queue = None
        self.sockets_metadata: dict = {}  # newer ComfyUI's progress handler reads it (no web clients here)

    def send_sync(self, event: Any, data: Any, sid: Any = None) -> None:
        if isinstance(data, (bytes, bytearray)) or not isinstance(event, str):
            event, data = str(event), {"binary": len(data) if hasattr(data, "__len__") else None}
        self.events.append([event, _jsonable(data)])

    def queue_updated(self) -> None:
        pass

    def add_on_prompt_handler(self, handler: Callable) -> None:
        pass


# -- the driver -----------------------------------------------------------------------------------------

class Driver:
    """ComfyUI with its nodes and custom nodes loaded; one method per request op."""

    def __init__(self, pack: str):
        import comfy.model_management
        import comfy.utils
        import execution
        import folder_paths
        import nodes
        import server as comfy_server

        self.model_management, self.execution, self.folder_paths, self.nodes = (
            comfy.model_management, execution, folder_paths, nodes)
        self.recorder = Recorder()
        comfy_server.PromptServer.instance = self.recorder
        comfy.utils.set_progress_bar_global_hook(self._progress)
        self.pack_results = self._load_custom_nodes(pack)
        self.executor = execution.PromptExecutor(self.recorder)
        self._helpers: dict[str, Any] = {}  # helper file -> its module, loaded once

    def _progress(self, value: int, total: int, preview_image: Any, prompt_id: Any = None, node_id: Any = None) -> None:
        # newer ComfyUI also passes prompt_id and node_id; the recorder already knows both
        rec = self.recorder
        self.model_management.throw_exception_if_processing_interrupted()
        rec.progress_count += 1
        rec.send_sync("progress", {"value": value, "max": total, "prompt_id": rec.last_prompt_id,
                                   "node": rec.last_node_id})
        if rec.interrupt_after is not None and rec.progress_count >= rec.interrupt_after:
            self.nodes.interrupt_processing(True)

    def _load_custom_nodes(self, pack: str) -> list[bool]:
        """nodes.init_custom_nodes(), noting whether each custom node module loaded; our pack's results."""
        nodes = self.nodes
        results: dict[str, bool] = {}
        original = nodes.load_custom_node

        def recording_load(module_path, *args, **kwargs):
            ok = original(module_path, *args, **kwargs)
            if not inspect.isawaitable(ok):
                results[module_path] = ok
                return ok

            async def recorded():  # newer ComfyUI loads custom nodes in coroutines
                results[module_path] = await ok
                return results[module_path]

            return recorded()

        nodes.load_custom_node = recording_load
        try:
            if hasattr(nodes, "init_extra_nodes"):  # ComfyUI ≥ 0.3.x: async, like main.py runs it (no API nodes)
                asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
            else:
                nodes.init_custom_nodes()
        finally:
            nodes.load_custom_node = original
        return [ok for path, ok in results.items() if os.path.basename(path) == pack]

    def hello(self, started: float) -> dict[str, Any]:
        return {"event": "ready", "pack_loaded": bool(self.pack_results) and all(self.pack_results),
                "pack_found": bool(self.pack_results), "seconds": time.perf_counter() - started,
                "nodes": len(self.nodes.NODE_CLASS_MAPPINGS)}

    # -- ops -------------------------------------------------------------------------------------------
    def ping(self, req: dict) -> dict:
        return {"pong": True}

    def node_info(self, node_class: str) -> dict[str, Any]:
        """server.py's node_info (a closure there)."""
        nodes = self.nodes
        obj_class = nodes.NODE_CLASS_MAPPINGS[node_class]
        info = {"input": obj_class.INPUT_TYPES(), "output": obj_class.RETURN_TYPES}
        info["output_is_list"] = getattr(obj_class, "OUTPUT_IS_LIST", [False] * len(obj_class.RETURN_TYPES))
        info["output_name"] = getattr(obj_class, "RETURN_NAMES", info["output"])
        info["name"] = node_class
        info["display_name"] = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_class, node_class)
        info["description"] = getattr(obj_class, "DESCRIPTION", "")
        info["category"] = getattr(obj_class, "CATEGORY", "sd")
        info["output_node"] = getattr(obj_class, "OUTPUT_NODE", False) is True
        return info

    def object_info(self, req: dict) -> dict:
        mappings = self.nodes.NODE_CLASS_MAPPINGS
        names = [req["node"]] if req.get("node") else list(mappings)
        return {"info": {n: self.node_info(n) for n in names if n in mappings}}

    def list_models(self, req: dict) -> dict:
        folder_paths, name = self.folder_paths, req["folder"]
        known = name in folder_paths.folder_names_and_paths
        return {"paths": folder_paths.get_folder_paths(name) if known else [],
                "files": folder_paths.get_filename_list(name) if known and req.get("files", True) else [],
                "known": known}

    def call(self, req: dict) -> dict:
        """Run a function of a helper file inside this ComfyUI process (its module is loaded once)."""
        file, function = req["file"], req["function"]
        module = self._helpers.get(file)
        if module is None:
            name = "e2e_helper_" + os.path.splitext(os.path.basename(file))[0]
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._helpers[file] = module
        try:
            result = {"ok": True, "value": getattr(module, function)(**(req.get("kwargs") or {}))}
        except Exception as err:
            result = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        return {"result": _jsonable(result)}

    def validate(self, req: dict) -> dict:
        try:
            validate = self.execution.validate_prompt
            if inspect.iscoroutinefunction(validate):  # newer ComfyUI: (prompt_id, prompt, partial_execution_list)
                valid, error, outputs, node_errors = asyncio.run(validate(f"validate-{req.get('id')}", req["graph"], None))
            else:
                valid, error, outputs, node_errors = validate(req["graph"])
        except KeyError as err:  # unknown class_type: the HTTP server answers 500 here
            return {"valid": False, "error": {"type": "invalid_prompt", "message": f"unknown node {err}",
                                              "details": str(err), "extra_info": {}},
                    "outputs": [], "node_errors": {}}
        return {"valid": bool(valid), "error": error, "outputs": list(outputs), "node_errors": node_errors}

    def run(self, req: dict) -> dict:
        graph = req["graph"]
        result = self.validate(req)
        if not result["valid"]:
            return result
        rec, executor = self.recorder, self.executor
        rec.events = []
        rec.progress_count = 0
        rec.interrupt_after = req.get("interrupt_after_progress")
        prompt_id = f"inprocess-{req['id']}"
        rec.last_prompt_id = prompt_id
        if hasattr(executor, "caches"):
            # newer ComfyUI caches by inputs whatever the node ids: a new cache per run makes every
            # node execute (events, progress), as fresh ids do in the vendored one
            executor.reset()
        t0 = time.perf_counter()
        executor.execute(graph, prompt_id, {"client_id": "inprocess"}, result["outputs"])
        seconds = time.perf_counter() - t0
        self.nodes.interrupt_processing(False)
        messages = [[event, _jsonable(data)] for event, data in executor.status_messages]
        result.update(
            prompt_id=prompt_id, seconds=seconds,
            status={"status_str": "success" if executor.success else "error", "completed": executor.success,
                    "messages": messages},
            outputs={k: _jsonable(v) for k, v in self._ui_outputs().items() if k in graph},
            events=rec.events,
        )
        probe = _selected(req.get("probe"), graph)
        if probe:
            result["probe"] = {nid: summarize(self._node_outputs(nid)) for nid in probe if self._node_outputs(nid) is not None}
        dump = _selected(req.get("dump"), graph)
        if dump:
            result["dumps"] = self._dump(dump, prompt_id, req["dump_dir"])
        return result

    def _ui_outputs(self) -> dict:
        """The last run's UI outputs by node id (newer ComfyUI keeps them in history_result)."""
        if hasattr(self.executor, "outputs_ui"):
            return self.executor.outputs_ui
        return getattr(self.executor, "history_result", {}).get("outputs", {})

    def _node_outputs(self, nid: str) -> Any:
        """A node's output slots from the last run (newer ComfyUI keeps them in its output cache), or None."""
        if hasattr(self.executor, "outputs"):
            return self.executor.outputs.get(nid)
        return self.executor.caches.outputs.get(nid)

    def _dump(self, node_ids: list[str], prompt_id: str, dump_dir: str) -> dict[str, str]:
        """Each node's tensor outputs in one safetensors file; node id -> path."""
        from safetensors.torch import save_file

        os.makedirs(dump_dir, exist_ok=True)
        paths = {}
        for nid in node_ids:
            outputs = self._node_outputs(nid)
            if outputs is None:
                continue
            tensors: dict = {}
            for slot, values in enumerate(outputs):
                # each slot holds a list (ComfyUI maps nodes over lists); unwrap single values
                _tensors(values[0] if len(values) == 1 else values, str(slot), tensors)
            path = os.path.join(dump_dir, f"{prompt_id}-{nid.replace('/', '_')}.safetensors")
            save_file(tensors, path)
            paths[nid] = path
        return paths

    # -- the loop --------------------------------------------------------------------------------------
    OPS = ("ping", "object_info", "list_models", "call", "validate", "run")

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        try:
            reply = getattr(self, op)(req) if op in self.OPS else {"fatal": f"unknown op {op!r}"}
        except Exception:  # a harness bug, not a node error (those are caught by the executor)
            reply = {"fatal": traceback.format_exc()}
        reply["id"] = req.get("id")
        return reply

    def serve(self, lines: Iterable[str], send: Callable[[dict], None]) -> None:
        for line in lines:
            if line.strip():
                send(self.handle(json.loads(line)))


def _selected(selection: bool | list | None, graph: dict) -> list[str]:
    """Node ids for a probe/dump selection: True means every node of the graph."""
    return list(graph) if selection is True else [str(s) for s in (selection or [])]


def main() -> int:
    opts = parse_args()
    proto = open_protocol()

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    started = time.perf_counter()
    configure_comfyui(opts)
    driver = Driver(opts.pack)
    send(driver.hello(started))
    driver.serve(sys.stdin, send)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # stdin closed: skip the interpreter's slow teardown of torch/transformers
