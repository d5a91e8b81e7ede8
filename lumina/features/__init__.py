"""Training-free features, each a per-call feature object plus pure functions (lumina.model.hooks)."""

from .compositional import RegionalPrompts, box_mask, grid_masks
from .context_drop import ContextDrop
from .gate_sparsity import GateSparsity, gate_report
from .region_adaptive import RegionAdaptive
from .style_shared import SharedAttention

__all__ = ["RegionalPrompts", "grid_masks", "box_mask", "SharedAttention", "RegionAdaptive", "ContextDrop", "GateSparsity",
           "gate_report"]
