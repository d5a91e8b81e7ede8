"""ComfyUI entry point of comfyui-lumina-t2x.

ComfyUI imports this folder as a package. Outside ComfyUI (tests, `import lumina`, training) the
node pack is skipped, so the library never needs ComfyUI.
"""

try:
    import comfy.model_management  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
