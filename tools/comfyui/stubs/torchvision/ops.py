"""Stand-in for torchvision.ops: every public name raises NotImplementedError when called."""

from . import _fallback

__getattr__ = _fallback(__name__)
