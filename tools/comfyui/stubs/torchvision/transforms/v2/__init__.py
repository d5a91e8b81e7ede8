"""Stand-in for torchvision.transforms.v2."""

from ... import _fallback

__getattr__ = _fallback(__name__)

from . import functional  # noqa: E402,F401
