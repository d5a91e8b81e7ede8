"""`pip install .` gives a working library: the wheel holds every subpackage of `lumina` (and no
other top-level package), and a fresh interpreter that can see only the installed copy imports it,
runs a forward and samples."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SMOKE = r"""
import sys
from pathlib import Path
import torch
import lumina
site = Path(sys.argv[1]).resolve()
assert Path(lumina.__file__).resolve().is_relative_to(site), lumina.__file__
assert not any(Path(p or ".").resolve() == Path(sys.argv[2]).resolve() for p in sys.path), "the repository is on sys.path"
config = lumina.LuminaConfig("next_dit", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=16)
torch.manual_seed(0)
model = lumina.build_model(config)
for p in model.parameters():
    torch.nn.init.normal_(p, std=0.05)
model.eval()
x, cap = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 16)
with torch.no_grad():
    v = model(x, torch.tensor([0.5]), cap)
assert v.shape == x.shape and torch.isfinite(v).all()
cond = lumina.Conditioning(cap, torch.ones(1, 5, dtype=torch.bool))
out = lumina.sample(model, cond, cond, (1, 4, 8, 8), steps=3, solver="midpoint", cfg=2.0, seed=1)
assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
from lumina.features import RegionAdaptive, RegionalPrompts, SharedAttention
print("ok", lumina.__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of what `pip install .` reads (no build isolation: offline)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lumina", source / "lumina", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_ships_every_library_module_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "lumina").rglob("*.py")}
    assert shipped == expected


def test_the_installed_library_imports_forwards_and_samples(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    # -P: neither the current directory nor a script directory goes onto sys.path
    done = subprocess.run(
        [sys.executable, "-P", "-c", SMOKE, str(site), str(REPO)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")
