"""Stand-in for torchvision.transforms.functional: the enum is real, every op raises when called."""

from .. import _fallback
from . import InterpolationMode  # noqa: F401

__getattr__ = _fallback(__name__)
