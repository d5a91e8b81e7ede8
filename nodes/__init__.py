"""ComfyUI nodes: thin adapters over `lumina` (the node classes land with issue #4)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
