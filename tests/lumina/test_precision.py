"""lumina.precision: the dtype "auto" picks follows the CPU's bf16 capability."""

from __future__ import annotations

import torch

from lumina import precision


def test_cpu_auto_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.auto_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.auto_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: (_ for _ in ()).throw(RuntimeError("no cpuinfo")))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert precision.auto_dtype("cpu") == torch.bfloat16


def test_the_answer_for_this_machine_is_what_torch_reports():
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert precision.cpu_has_native_bf16() == native
