"""Padded captions: one masked SDPA call (what `lumina.model.attention.attend` does now) against the
row-by-row loop over each row's real keys (what it did before), forward and forward + backward.

    python benchmarks/attention_padding.py

Shapes: the shapes demo's training batch (64 rows, 64 tokens, 4 heads over 2 K/V heads, head_dim
48, captions of 8–18 tokens), a 16-row clip batch (256 tokens), and a CFG pair at 4096 tokens with
a 128-token caption. Interleaved rounds (loop, masked, loop, ...); prints the medians and the
ratio masked / loop (below 1: the masked call is faster) and the largest output difference.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lumina.model.attention import _sdpa, _sdpa_per_row, _suffix_lengths  # noqa: E402

CASES = [  # (rows, queries, max caption, heads, kv heads, head_dim)
    (64, 64, 18, 4, 2, 48),
    (16, 256, 18, 4, 2, 48),
    (2, 4096, 128, 8, 8, 64),
]


def timed(fn, backward: bool) -> float:
    start = time.perf_counter()
    out = fn()
    if backward:
        out.square().sum().backward()
    return time.perf_counter() - start


def main(rounds: int = 7) -> None:
    torch.manual_seed(0)
    for b, lq, lk, h, kv, d in CASES:
        lengths = torch.randint(lk // 2, lk + 1, (b,))
        lengths[0] = lk
        mask = torch.arange(lk)[None] < lengths[:, None]
        for backward in (False, True):
            q = torch.randn(b, lq, h, d, requires_grad=backward)
            k = torch.randn(b, lk, kv, d, requires_grad=backward)
            v = torch.randn(b, lk, kv, d, requires_grad=backward)
            rows = _suffix_lengths(mask)
            loop = lambda: _sdpa_per_row(q, k, v, [lq] * b, rows, None)  # noqa: E731
            masked = lambda: _sdpa(q, k, v, mask, None)  # noqa: E731
            with torch.set_grad_enabled(backward):
                timed(loop, backward), timed(masked, backward)  # warm-up
                times = {"loop": [], "masked": []}
                for _ in range(rounds):
                    times["loop"].append(timed(loop, backward))
                    times["masked"].append(timed(masked, backward))
                diff = float((loop() - masked()).detach().abs().max())
            t_loop, t_masked = statistics.median(times["loop"]), statistics.median(times["masked"])
            print(f"rows {b:3d} × {lq:5d} tokens, caption ≤ {lk:3d}, {'fwd+bwd' if backward else 'forward'}: "
                  f"loop {t_loop * 1e3:8.2f} ms, masked {t_masked * 1e3:8.2f} ms, masked/loop {t_masked / t_loop:.2f} "
                  f"(max |diff| {diff:.1e})")


if __name__ == "__main__":
    main()
