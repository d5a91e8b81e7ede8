"""Layer widths the official code derives from the model width (shared by every family's config)."""

from __future__ import annotations


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """SwiGLU width as the official code computes it: 2/3 of 4·dim, scaled, rounded up."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class AttentionWidths:
    """Head widths both config classes (LuminaConfig, LuminaVideoConfig) derive from their
    `dim`, `n_heads` and `n_kv_heads` fields (None = plain multi-head attention)."""

    dim: int
    n_heads: int
    n_kv_heads: int | None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def check_heads(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
