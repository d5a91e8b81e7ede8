"""Stand-in for torchvision.transforms (see the package docstring)."""

from enum import Enum

from .. import _fallback


class InterpolationMode(Enum):
    """The real enum's members and values (torchvision.transforms.InterpolationMode)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


__getattr__ = _fallback(__name__)

from . import functional, v2  # noqa: E402,F401
