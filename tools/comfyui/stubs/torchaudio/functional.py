"""torchaudio.functional of the import-only stand-in (see __init__.py): every name raises when called."""

from . import _Unavailable


def __getattr__(name: str) -> _Unavailable:
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"torchaudio.functional.{name}")
