"""Make the repository's `lumina` package importable however pytest is started.

Tests are run with `--rootdir=tests` (the repository root is a ComfyUI custom-node package),
so the root is put on sys.path explicitly rather than relying on the current directory.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
