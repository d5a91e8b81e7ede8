"""Stand-in for torchvision.transforms.v2.functional: every op raises when called."""

from ... import _fallback
from .. import InterpolationMode  # noqa: F401

__getattr__ = _fallback(__name__)
