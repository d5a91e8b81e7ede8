"""benchmarks/gpu_pipeline.py (run on a GPU whenever one is lent) still runs end to end: its tiny
shape on the CPU, ours against diffusers' LuminaPipeline on the same weights, noise and grid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_pipeline.py"


def test_the_gpu_benchmark_runs_on_the_cpu_and_both_pipelines_agree():
    pytest.importorskip("diffusers")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--shape", "tiny", "--steps", "2", "--repeats", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ratio = re.search(r"ours/diffusers = ([\d.]+) \(paired ([\d.]+), (\d+) rounds\)", out.stdout)
    assert ratio and int(ratio.group(3)) == 2 and float(ratio.group(1)) > 0, out.stdout
    psnr = re.search(r"PSNR of ours against diffusers' final latent: ([\d.]+|inf) dB", out.stdout)
    # fp32 on the CPU: the same sampler on the same weights, up to float rounding
    assert psnr and float(psnr.group(1)) > 100, out.stdout
