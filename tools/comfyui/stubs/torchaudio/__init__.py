"""Import-only stand-in for torchaudio, beside the torchvision one (see ../torchvision/__init__.py),
on PYTHONPATH of the ComfyUI processes tools/comfyui starts; never installed.

Why: ComfyUI 0.3.64 imports torchaudio at module level in comfy_extras/nodes_audio.py and
comfy/audio_encoders/ (audio nodes and models this pack never uses); without it those core nodes
fail to import and the log says "Cannot import ...". No PyPI torchaudio works beside the CPU
torch 2.13. Every attribute, at any depth (`torchaudio.transforms.Resample`), is a placeholder
that raises NotImplementedError when called, so imports and class definitions succeed and
any real use says why it cannot work.
"""

__version__ = "0.0.0+comfyui.lumina.t2x.test.stub"
IS_STUB = True


class _Unavailable:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, name: str) -> "_Unavailable":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(
            f"{self._name} was called, but this ComfyUI process uses an import-only torchaudio "
            "stand-in (tools/comfyui/stubs/torchaudio); install a real torchaudio to use it"
        )

    def __repr__(self) -> str:
        return f"<unavailable {self._name}>"


def __getattr__(name: str) -> _Unavailable:
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"torchaudio.{name}")


from . import functional, transforms  # noqa: E402,F401  (`from torchaudio.transforms import MelScale`)
