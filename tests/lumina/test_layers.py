"""The shared SwiGLU's row chunks on CPU (lumina.model.layers.ffn_chunk_rows)."""

from __future__ import annotations

import pytest
import torch

from lumina.model import layers
from lumina.model.layers import FeedForward, ffn_chunk_rows


def counting_w1(ffn: FeedForward) -> list[int]:
    rows: list[int] = []
    ffn.w1.register_forward_hook(lambda module, args, out: rows.append(args[0].numel() // args[0].shape[-1]))
    return rows


@pytest.fixture
def ffn() -> FeedForward:
    torch.manual_seed(0)
    return FeedForward(32, 96)


def test_inference_over_the_byte_limit_runs_row_chunks_equal_to_one_pass(ffn, monkeypatch):
    x = torch.randn(2, 37, 32)
    with torch.no_grad():
        whole = ffn(x)
        monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 10 * 96 * 4)  # ten rows of activations
        calls = counting_w1(ffn)
        chunked = ffn(x)
    assert calls == [10] * 7 + [4]  # 74 rows
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_inference_mode_chunks_too_and_small_calls_run_in_one_pass(ffn, monkeypatch):
    monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 10 * 96 * 4)
    calls = counting_w1(ffn)
    with torch.inference_mode():
        ffn(torch.randn(25, 32))
        ffn(torch.randn(1, 10, 32))  # exactly at the limit: one pass
    assert calls == [10, 10, 5, 10]


def test_training_keeps_one_pass_and_its_gradients(ffn, monkeypatch):
    monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 10 * 96 * 4)
    calls = counting_w1(ffn)
    x = torch.randn(3, 20, 32, requires_grad=True)
    ffn(x).square().sum().backward()
    assert calls == [60]
    assert x.grad is not None and ffn.w1.weight.grad is not None


def test_chunk_rows_follow_the_activation_bytes():
    x = torch.zeros(2, 3072, 768)
    assert ffn_chunk_rows(x, 2048) is None  # gradients on: training
    with torch.no_grad():
        assert ffn_chunk_rows(x, 2048) == layers.CPU_FFN_CHUNK_BYTES // (2048 * 4)  # 50 MB of activations
        assert ffn_chunk_rows(x.bfloat16(), 2048) == layers.CPU_FFN_CHUNK_BYTES // (2048 * 2)
        assert ffn_chunk_rows(torch.zeros(2, 256, 768), 2048) is None  # 4 MB: one pass
        assert ffn_chunk_rows(x.to("meta"), 2048) is None  # not on the CPU


def test_compiled_chunks_equal_eager_and_a_repeated_size_is_not_recompiled(ffn, monkeypatch):
    from torch._dynamo.testing import CompileCounter

    monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 10 * 96 * 4)
    counter = CompileCounter()
    compiled = torch.compile(ffn.forward, backend=counter)
    with torch.inference_mode():
        for rows in (37, 37, 37):
            x = torch.randn(2, rows, 32)
            torch.testing.assert_close(compiled(x), ffn(x), rtol=1e-6, atol=1e-6)
    assert counter.frame_count == 1


def test_a_dynamic_graph_serves_every_size_with_its_chunk_count(ffn, monkeypatch):
    """lumina/compile.py's docstring: the chunk count is part of the graph, the row count is not."""
    from torch._dynamo.testing import CompileCounter

    monkeypatch.setattr(layers, "CPU_FFN_CHUNK_BYTES", 10 * 96 * 4)
    counter = CompileCounter()
    compiled = torch.compile(ffn.forward, backend=counter, dynamic=True)
    seen = []
    with torch.inference_mode():
        for rows in (25, 27, 29, 35, 26):  # 3, 3, 3, 4, 3 chunks
            compiled(torch.randn(1, rows, 32))
            seen.append(counter.frame_count)
    assert seen == [1, 1, 1, 2, 2]
