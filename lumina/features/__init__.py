"""Training-free features, each an options dataclass plus pure functions, passed per call."""

from .compositional import RegionalPrompts, grid_masks, box_mask
from .style_shared import SharedAttention

__all__ = ["RegionalPrompts", "grid_masks", "box_mask", "SharedAttention"]
