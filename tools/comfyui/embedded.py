"""ComfyUI's own modules imported into *this* process, with the pack loaded by ComfyUI's loader:
unit tests call node classes directly (`FUNCTION` methods) without booting a server.

    comfy = import_comfyui(find_comfyui(), Workspace.create(tmp))
    (latent,) = comfy.run_node("LuminaEmptyLatent", preset="custom", width=64, height=64, batch_size=1)
    comfy.nodes                 # ComfyUI's nodes.py (ConditioningSetArea, ...)
    comfy.pack                  # this repository as ComfyUI imports it: sys.modules["comfyui_lumina_t2x"]

How the import is kept from leaking into the rest of the process:
- ComfyUI's folder goes to the *front* of sys.path, so its top-level `nodes`, `server`,
  `execution`, `folder_paths` win over anything else (the repository root may be on sys.path, as
  in pytest; its `nodes/` package would otherwise shadow ComfyUI's `nodes.py`). The pack is never
  imported as `nodes`: ComfyUI's `load_custom_node` imports the workspace's
  `custom_nodes/comfyui_lumina_t2x` symlink as the package `comfyui_lumina_t2x`.
- `comfy.options` is left alone, so ComfyUI parses an empty argv (not pytest's); `--cpu` is set
  on the parsed args directly, before `comfy.model_management` picks a device.
- The torchvision stand-in is on sys.path only while ComfyUI imports (comfy/sd.py imports
  torchvision at module level) and is dropped from sys.modules afterwards; transformers is asked
  "is torchvision installed?" first, so its cached answer stays "no" for the whole process.
- `release()` takes ComfyUI's folders off sys.path again (`attach()` puts them back; nodes.py adds
  `<comfyui>/comfy`, whose `utils.py`, `ops.py`, ... would shadow other top-level modules). Its modules
  stay imported (torch-backed modules cannot be unloaded): `import nodes` keeps giving ComfyUI's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from .workspace import PACK_NAME, STUBS_DIR, Workspace


class PackLoadError(RuntimeError):
    """ComfyUI imported fine but could not load the pack (the message holds ComfyUI's traceback)."""


@dataclass
class EmbeddedComfy:
    """ComfyUI imported in this process, folders pointed at `workspace`, the pack loaded."""

    comfyui_dir: Path
    workspace: Workspace
    nodes: ModuleType  # ComfyUI's nodes.py; NODE_CLASS_MAPPINGS holds core nodes and ours
    folder_paths: ModuleType
    pack: ModuleType
    paths: tuple[str, ...] = ()  # what the import put in front of sys.path (nodes.py adds <comfyui>/comfy)

    def node(self, class_type: str) -> Any:
        """A fresh instance of a node class, as the executor makes one."""
        return self.nodes.NODE_CLASS_MAPPINGS[class_type]()

    def run_node(self, class_type: str, **inputs: Any) -> tuple:
        """Call a node's FUNCTION with its inputs (links given as values): its output tuple.
        Under torch.inference_mode(), as ComfyUI's executor runs every node."""
        import torch

        node = self.node(class_type)
        with torch.inference_mode():
            return getattr(node, node.FUNCTION)(**inputs)

    def release(self) -> None:
        """Take ComfyUI's folders off sys.path (imported modules stay; see the module docstring)."""
        sys.path[:] = [p for p in sys.path if p not in self.paths]

    def attach(self) -> None:
        """Put ComfyUI's folders back in front of sys.path (for its lazy top-level imports)."""
        self.release()
        sys.path[:0] = self.paths


def import_comfyui(comfyui_dir: Path, workspace: Workspace) -> EmbeddedComfy:
    """Import ComfyUI from `comfyui_dir` (the vendored one: `find_comfyui()`) into this process and
    load the pack from `workspace.pack_link`. ImportError: ComfyUI (or a module it needs) cannot be
    imported; PackLoadError: the pack failed; RuntimeError: another `nodes` module is in the way."""
    comfyui_dir = Path(comfyui_dir).resolve()
    _refuse_foreign_nodes_module(comfyui_dir)
    _settle_torchvision_checks()
    before = list(sys.path)
    if str(comfyui_dir) not in sys.path:
        sys.path.insert(0, str(comfyui_dir))
    with _torchvision_stand_in():
        import comfy.options  # noqa: F401  (args_parsing stays off: ComfyUI parses [] instead of our argv)
        import comfy.cli_args

        comfy.cli_args.args.cpu = True  # main.py's --cpu; read once when model_management is imported
        import folder_paths

        _point_folders(folder_paths, workspace)
        import comfy.model_management  # noqa: F401
        import latent_preview  # noqa: F401  (imported lazily by our sampler's progress callback)
        import nodes
    if Path(nodes.__file__).resolve().parent != comfyui_dir:
        raise RuntimeError(f"`nodes` is {nodes.__file__}, not ComfyUI's nodes.py in {comfyui_dir}")
    pack = sys.modules.get(PACK_NAME) or _load_pack(nodes, workspace)
    added = tuple(p for p in sys.path if p not in before) or (str(comfyui_dir),)
    return EmbeddedComfy(comfyui_dir, workspace, nodes, folder_paths, pack, added)


def _refuse_foreign_nodes_module(comfyui_dir: Path) -> None:
    """A `nodes` module imported before ComfyUI (our nodes/ package, via the repository root on
    sys.path) would be taken for ComfyUI's by every later `import nodes`."""
    existing = sys.modules.get("nodes")
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve().parent != comfyui_dir:
        raise RuntimeError(f"a different `nodes` module is already imported ({existing!r}); "
                          "ComfyUI's nodes.py cannot be imported in this process")


def _settle_torchvision_checks() -> None:
    """transformers caches whether torchvision is installed on first ask (and then imports its
    names at module level): ask now, while the answer is the true one."""
    try:
        from transformers.utils import import_utils
    except ImportError:
        return
    check = getattr(import_utils, "is_torchvision_available", None)
    if callable(check):
        check()


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """The import-only torchvision on sys.path for the duration; a real one, if any, is untouched."""
    real = importlib.util.find_spec("torchvision") is not None
    if real:
        yield
        return
    sys.path.insert(0, str(STUBS_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(STUBS_DIR))
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # ComfyUI's modules keep their references; nobody else finds it


def _point_folders(folder_paths: ModuleType, workspace: Workspace) -> None:
    """The workspace's folders, as the extra_model_paths yaml wires them for the runners."""
    folder_paths.set_output_directory(str(workspace.output_dir))
    folder_paths.set_input_directory(str(workspace.input_dir))
    folder_paths.set_temp_directory(str(workspace.temp_dir))
    workspace.user_dir.mkdir(parents=True, exist_ok=True)
    folder_paths.user_directory = str(workspace.user_dir)
    for name, folder in workspace.model_paths().items():
        if str(folder) not in folder_paths.folder_names_and_paths.get(name, ([], set()))[0]:
            folder_paths.add_model_folder_path(name, str(folder))


def _load_pack(nodes: ModuleType, workspace: Workspace) -> ModuleType:
    """ComfyUI's own loader on the custom_nodes symlink; it logs failures, we raise them."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        ok = nodes.load_custom_node(str(workspace.pack_link))
    finally:
        root.removeHandler(handler)
    if not ok:
        raise PackLoadError(f"ComfyUI could not load {workspace.pack_link}:\n" + "\n".join(messages))
    return sys.modules[PACK_NAME]
