"""`python -m train.compare A B`: are two trained models the same tensors? Each of A and B is a run
folder, its checkpoints/latest, or a .safetensors file (a folder gives its EMA weights when it has
them). Prints whether every tensor is bit-identical, and the largest absolute difference against
the largest weight; exits 1 when a tensor differs by more than --atol (default 0: bit for bit).

    python -m train.compare runs/shapes_demo assets/demo/lumina_shapes/consolidated_ema.00-of-01.safetensors

Compares tensors, not files: safetensors writes its metadata entries in no fixed order, so two
identical models can differ in bytes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .sample import CLIError, pick_weights


@dataclass(frozen=True)
class Comparison:
    tensors: int
    identical: bool
    max_abs_diff: float
    worst_key: str
    max_abs_weight: float


def weights_file(path: str | Path) -> Path:
    """The .safetensors file a run folder, its checkpoints/latest or a file names (EMA preferred)."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such file or folder (give a run folder, its checkpoints/latest, or a .safetensors file)")
    latest = path / "checkpoints" / "latest"
    file = pick_weights(latest if latest.is_dir() else path, None)
    if file.suffix != ".safetensors":
        raise CLIError(f"{file}: only .safetensors files are compared (export a .pth with python -m train export)")
    return file


def compare_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> Comparison:
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise CLIError(f"the models have different tensors: only in the first {only_a[:5]}, only in the second {only_b[:5]}")
    for key in a:
        if a[key].shape != b[key].shape or a[key].dtype != b[key].dtype:
            raise CLIError(f"{key}: {tuple(a[key].shape)} {a[key].dtype} against {tuple(b[key].shape)} {b[key].dtype}")
    worst, worst_key, identical = 0.0, next(iter(a), ""), True
    for key in a:
        if torch.equal(a[key], b[key]):
            continue
        identical = False
        diff = (a[key].float() - b[key].float()).abs().max().item()
        if diff > worst:
            worst, worst_key = diff, key
    largest = max((t.float().abs().max().item() for t in a.values() if t.numel()), default=0.0)
    return Comparison(len(a), identical, worst, worst_key, largest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="a run folder, its checkpoints/latest, or a .safetensors file")
    parser.add_argument("b", help="the same, to compare against")
    parser.add_argument("--atol", type=float, default=0.0, help="largest allowed absolute difference (default 0: bit for bit)")
    args = parser.parse_args(argv)
    try:
        files = weights_file(args.a), weights_file(args.b)
        result = compare_state_dicts(load_file(str(files[0])), load_file(str(files[1])))
    except CLIError as err:
        parser.exit(2, f"error: {err}\n")
    verdict = "bit-identical" if result.identical else f"max |diff| {result.max_abs_diff:.3g} in {result.worst_key}"
    print(f"{files[0]}\n{files[1]}\n{result.tensors} tensors: {verdict} (largest weight {result.max_abs_weight:.3g})")
    return 0 if result.max_abs_diff <= args.atol else 1


if __name__ == "__main__":
    raise SystemExit(main())
