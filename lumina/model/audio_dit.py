"""The 1-D Flag-DiT of Lumina-T2Music and Lumina-T2Audio (official
`lumina_music/models/diffusion/flag_large_dit.py: FlagDiTv2`, identical in `lumina_audio/`), on the
shared Flag-DiT block.

The latent is a (B, C, T) mel-VAE latent: each of the T frames is one token (`proj_in`, no
patches, no [nextline] token), 1-D RoPE over the frame index 0..T-1 (the whole head rotated, theta
10000, no QK-norm), at most `max_len` frames (the official table's length). Blocks are the
Flag-DiT block (`lumina.model.flag_dit.FlagDiTBlock`): RMSNorm, adaLN shift/scale/gate with raw
(untanh'd) gates, self-attention plus cross-attention to the caption whose per-head gate IS
tanh'd, SwiGLU. The adaLN input is t_embedder(step) + cap_embedder(mean of the caption tokens).
`AudioDiTBlock` is that block with two pairs of projections packed into one GEMM each (SwiGLU
w1/w3, caption wk_y/wv_y) and fused adaLN arithmetic; keys and results are the official ones.

Quirks of the official forward, reproduced:
- the model is conditioned on the INTEGER diffusion step `long(t·1000)` (the official ODE wrapper
  truncates the float32 product: t = 0.2 of a 26-point grid is 0.19999999 and gives 199); a float
  `t` in [0, 1] (flow time, t = 0 noise) is converted here exactly that way, an integer tensor is
  taken as the step itself;
- it takes no caption mask: every caption token (padding included) enters the mean pool and the
  cross-attention. `cap_mask=None` (the default) is that behaviour; a mask may be given to leave
  padding out, which the released models were not trained with.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import LuminaCheckpointError, LuminaInputError
from ..finite import all_finite
from ..widths import ffn_hidden_dim
from .attention import LayerContext, LuminaAttention, attend
from .flag_dit import FlagDiTBlock
from .hooks import ForwardInfo, single_rows
from .layers import FeedForward, FinalLayer, TimestepEmbedder, caption_embedder
from .options import DEFAULT_OPTIONS, ForwardOptions
from .rope import rope_angles, rope_table

AUDIO_DIT_FAMILY = "audio_dit"
AUDIO_DIT_NAME = "1-D Flag-DiT (Lumina-T2Music / Lumina-T2Audio)"
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class AudioDiTConfig:
    """Everything needed to build the 1-D Flag-DiT; defaults are the released models'
    (configs/lumina-text2music.yaml and lumina-text2audio.yaml: both the same DiT)."""

    family: ClassVar[str] = AUDIO_DIT_FAMILY
    dim: int = 768
    n_layers: int = 16
    n_heads: int = 32
    in_channels: int = 20
    cap_feat_dim: int = 1024
    max_len: int = 1000
    ffn_hidden: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    steps: int = 1000  # num_timesteps: flow time t ↦ diffusion step long(t · steps)

    # fixed by FlagDiTv2 (it passes no n_kv_heads / qk_norm to FlagDiT)
    n_kv_heads: ClassVar[None] = None
    qk_norm: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "in_channels", "cap_feat_dim", "max_len", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AudioDiTConfig.{name}={getattr(self, name)} must be ≥ 1")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of an even width (RoPE pairs)")

    # the attributes the shared Flag-DiT block reads
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_hidden or ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def adaln_dim(self) -> int:
        return self.dim  # FlagDiTv2's adaLN runs at the model width (no 1024 cap)

    @property
    def out_channels(self) -> int:
        return self.in_channels

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "family": self.family}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AudioDiTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> "AudioDiTConfig":
        return replace(self, **changes)


AUDIO_DIT_PRESETS = {"lumina-t2music": AudioDiTConfig(), "lumina-t2audio": AudioDiTConfig()}


def _shape(sd: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise LuminaCheckpointError(
            f"missing key {key!r}", source=source, keys=[key],
            hint="the file is not a complete Lumina-T2Music / Lumina-T2Audio DiT",
        )
    return tuple(sd[key].shape)


def is_audio_dit_state_dict(keys: Any) -> bool:
    """The 1-D Flag-DiT's markers (official names, prefix stripped): `proj_in` and `blocks.N`."""
    keys = set(keys)
    return "proj_in.weight" in keys and any(k.startswith("blocks.0.") for k in keys)


def infer_audio_dit_config(state_dict: Mapping[str, Any], source: str = "state dict", **overrides: Any) -> AudioDiTConfig:
    """An AudioDiTConfig from official-named DiT weights (no `model.diffusion_model.` prefix), from
    shapes only. The head count is read off the per-head cross-attention gate (`attention.gate`,
    one entry per head); `max_len`, `rope_theta`, `norm_eps` change no shape and take the released
    values unless given in `overrides` (`n_heads` too may be overridden, and must then agree)."""
    dim, in_channels = _shape(state_dict, "proj_in.weight", source)
    per_block = Counter(int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)))
    if not per_block:
        raise LuminaCheckpointError("no transformer blocks (blocks.N.*)", source=source, hint="pick a Lumina-T2Music / T2Audio checkpoint")
    fullest = max(per_block.values())
    n_layers = 1 + max(i for i, n in per_block.items() if 2 * n > fullest)
    missing = [i for i in range(n_layers) if per_block.get(i, 0) != fullest]
    if missing:
        raise LuminaCheckpointError(
            f"blocks {missing} are incomplete", source=source, keys=[f"blocks.{i}.*" for i in missing],
            hint="the file is truncated or edited; download it again",
        )
    n_heads = _shape(state_dict, "blocks.0.attention.gate", source)[0]
    given = overrides.pop("n_heads", None)
    if given is not None and int(given) != n_heads:
        raise LuminaCheckpointError(
            f"n_heads={given} was given but the weights have {n_heads} per-head gates", source=source,
            keys=["blocks.0.attention.gate"], hint=f"leave n_heads unset (it is {n_heads})",
        )
    cap_feat_dim = _shape(state_dict, "blocks.0.attention_y_norm.weight", source)[0]
    ffn_hidden = _shape(state_dict, "blocks.0.feed_forward.w1.weight", source)[0]
    if _shape(state_dict, "final_layer.linear.weight", source) != (in_channels, dim):
        raise LuminaCheckpointError(
            f"final_layer.linear does not map width {dim} back to {in_channels} channels", source=source,
            keys=["final_layer.linear.weight"],
        )
    try:
        return AudioDiTConfig(
            dim=dim, n_layers=n_layers, n_heads=n_heads, in_channels=in_channels, cap_feat_dim=cap_feat_dim,
            ffn_hidden=ffn_hidden, **overrides,
        )
    except (TypeError, ValueError) as err:
        raise LuminaCheckpointError(str(err), source=source) from None


def _adjacent(*weights: Tensor) -> bool:
    """Whether each weight's rows directly follow the previous one's in one buffer (so [a; b; …]
    is one matrix, no copy)."""
    a = weights[0]
    if a.device.type == "meta" or not a.is_contiguous():
        return False
    offset = a.storage_offset() + a.numel()
    for b in weights[1:]:
        if not (b.dtype == a.dtype and b.device == a.device and b.is_contiguous() and b.shape[1:] == a.shape[1:]
                and b.untyped_storage().data_ptr() == a.untyped_storage().data_ptr() and b.storage_offset() == offset):
            return False
        offset += b.numel()
    return True


def _pack(*linears: nn.Linear) -> None:
    """Put the linears' weight rows one after another in one new buffer (no-op when they already are)."""
    weights = [m.weight for m in linears]
    if weights[0].device.type == "meta" or _adjacent(*weights):
        return
    rows = [w.shape[0] for w in weights]
    for m, w, part in zip(linears, weights, torch.cat([w.detach() for w in weights]).split(rows)):
        m.weight = nn.Parameter(part, requires_grad=w.requires_grad)


@torch.compiler.disable  # storage pointers cannot be traced: a compiled block (lumina.compile) asks eagerly
def _packed(*linears: nn.Linear) -> Tensor | None:
    """[a.weight; b.weight; …] as one matrix without a copy, or None when they are not laid out so
    or gradients are needed (a gradient through the shared view would not reach b)."""
    weights = [m.weight for m in linears]
    if not _adjacent(*weights) or (torch.is_grad_enabled() and any(w.requires_grad for w in weights)):
        return None
    return weights[0].as_strided((sum(w.shape[0] for w in weights), weights[0].shape[1]), weights[0].stride())


def _fused(*linears: nn.Linear) -> Tensor | None:
    """`_packed`'s fused matrix in eager code; None inside torch.compile, where the storage check
    would split the block's graph at every projection (12 graphs a block, and compiling gained this
    model nothing: 0.93 of the official's forward time either way): compiled code runs the separate
    GEMMs in one graph (0.84, benchmarks/audio_dit_forward.py --compile)."""
    return None if torch.compiler.is_compiling() else _packed(*linears)


class PackedSwiGLU(FeedForward):
    """The shared SwiGLU (keys w1, w2, w3) with w1 and w3 kept in one buffer, [w1; w3], so a single
    GEMM computes both halves: at these widths (768 → 2·2048) one wide GEMM is measurably faster on
    CPU than two. The model lays the buffers out after loading and after every `.to()`
    (`AudioDiT.pack_weights`); weights not laid out so (replaced by a patcher, say) take the
    two-GEMM path, and so does a forward that needs gradients. State dicts of a packed model hold
    views of one buffer: clone them before `safetensors.save_file`, which refuses shared tensors."""

    def pack_(self) -> None:
        _pack(self.w1, self.w3)

    def forward(self, x: Tensor) -> Tensor:
        both = _fused(self.w1, self.w3)
        if both is None:
            return super().forward(x)
        gate, up = F.linear(x, both).split((self.w1.weight.shape[0], self.w3.weight.shape[0]), dim=-1)
        return self.w2(F.silu(gate).mul_(up))  # no gradients on this path: in place is safe


class PackedAttention(LuminaAttention):
    """The shared attention with its projections packed like PackedSwiGLU's (same keys, same
    fallbacks): [wq; wk; wv] in one buffer, so one GEMM projects the tokens (768 → 3·768), and the
    caption's [wk_y; wv_y] in another, so one GEMM projects the caption for both."""

    def pack_(self) -> None:
        _pack(self.wq, self.wk, self.wv)
        _pack(self.wk_y, self.wv_y)

    def self_projections(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        three = _fused(self.wq, self.wk, self.wv)
        if three is None:
            return super().self_projections(x)
        b, n, _ = x.shape
        q, k, v = F.linear(x, three).split([m.weight.shape[0] for m in (self.wq, self.wk, self.wv)], dim=-1)
        return (self.q_norm(q).reshape(b, n, self.n_heads, self.head_dim),
                self.k_norm(k).reshape(b, n, self.n_kv_heads, self.head_dim), v.reshape(b, n, self.n_kv_heads, self.head_dim))

    def cross_attention(
        self, q: Tensor, cap_y: Tensor, cap_mask: Tensor | None, x_mask: Tensor | None, groups: Tensor | None = None
    ) -> Tensor:
        both = _fused(self.wk_y, self.wv_y)
        if both is None or groups is not None:
            return super().cross_attention(q, cap_y, cap_mask, x_mask, groups)
        b, lc = cap_y.shape[:2]
        ky, vy = F.linear(cap_y, both).split((self.wk_y.weight.shape[0], self.wv_y.weight.shape[0]), dim=-1)
        ky = self.ky_norm(ky).view(b, lc, self.n_kv_heads, self.head_dim)
        vy = vy.reshape(b, lc, self.n_kv_heads, self.head_dim)
        return attend(q, ky, vy, key_mask=cap_mask, query_mask=x_mask)


class AudioDiTBlock(FlagDiTBlock):
    """The Flag-DiT block with the packed projections above and its adaLN arithmetic as fused
    multiply-adds (shift + norm(x)·(1 + scale), x + gate·branch: one pass each instead of two)."""

    def __init__(self, c: "AudioDiTConfig") -> None:
        super().__init__(c)  # type: ignore[arg-type]
        self.attention = PackedAttention(c.dim, c.n_heads, c.kv_heads, c.cap_feat_dim, c.qk_norm)
        self.feed_forward = PackedSwiGLU(c.dim, c.hidden_dim)

    def forward(self, x: Tensor, ctx: LayerContext, layer: int = 0) -> Tensor:
        mod = self.adaLN_modulation(ctx.adaln_input).unsqueeze(1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = torch.addcmul(shift_msa, self.attention_norm(x), 1 + scale_msa)
        x = torch.addcmul(x, gate_msa, self.attention(h, self.attention_y_norm(ctx.cap_feats), ctx, layer, self.attention_y_norm))
        h = torch.addcmul(shift_mlp, self.ffn_norm(x), 1 + scale_mlp)
        return torch.addcmul(x, gate_mlp, self.feed_forward(h))


def flow_steps(t: Tensor, steps: int = 1000) -> Tensor:
    """Flow time → the integer diffusion step the official wrapper feeds the DiT:
    `long(t · steps)` with the product in float32 and truncation toward zero."""
    return (t.to(torch.float32) * steps).long()


class AudioDiT(nn.Module):
    """`model(x, t, cap_feats, cap_mask=None, options=None)` → velocity (B, C, T) (t=0 noise, t=1 data).

    x: (B, C, T) latent frames; t: flow time in [0, 1] (scalar or (B,), float: the model embeds
    long(t·1000)) or the official integer step (integer tensor); cap_feats: (B, L, cap_feat_dim)
    text features; cap_mask: None = every token (the official behaviour)."""

    family = AUDIO_DIT_FAMILY

    def __init__(self, config: AudioDiTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.t_embedder = TimestepEmbedder(c.dim)
        self.proj_in = nn.Linear(c.in_channels, c.dim)
        self.blocks = nn.ModuleList([AudioDiTBlock(c) for _ in range(c.n_layers)])
        self.final_layer = FinalLayer(c.dim, c.dim, c.out_channels, with_shift=True)
        self.cap_embedder = caption_embedder(c.cap_feat_dim, c.dim)
        # device → (max_len, head_dim/2) complex64 rotations; a plain dict, not a buffer (the
        # official table is a plain attribute too, never in the state dict)
        self._rope_cache: dict[tuple, Tensor] = {}
        self.pack_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_in.weight.dtype

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._rope_cache.clear()  # .to() / .float(): never hand out tables on the old device
        out = super()._apply(fn, *args, **kwargs)
        self.pack_weights()  # each parameter was converted on its own: lay [w1; w3] out again
        return out

    def pack_weights(self) -> None:
        """Lay every block's [w1; w3], [wq; wk; wv] and [wk_y; wv_y] out as one buffer each; a no-op when they are."""
        for module in self.modules():
            if isinstance(module, (PackedSwiGLU, PackedAttention)):
                module.pack_()

    def rope(self, length: int, device: torch.device, options: ForwardOptions = DEFAULT_OPTIONS, t: float = 0.0) -> Tensor:
        """(length, head_dim/2) complex64 rotations of frames 0..length-1 (the official
        `freqs_cis[:length]`: positions ÷ rope_linear, theta × rope_ntk, both 1 as released)."""
        c = self.config
        scaling = options.rope_scaling(t)
        key = (str(device), scaling)
        table = self._rope_cache.get(key)
        if table is None:
            positions = torch.arange(c.max_len, device=device)[:, None]
            table = rope_table(rope_angles(positions, c.head_dim, c.rope_theta, scaling, interpolate_positions=True))
            if len(self._rope_cache) >= 8:
                self._rope_cache.pop(next(iter(self._rope_cache)))
            self._rope_cache[key] = table
        return table[:length]

    def timesteps(self, t: Tensor | float, batch: int) -> tuple[Tensor, Tensor]:
        """((B,) integer steps the DiT embeds, (B,) flow times) of a call's `t`."""
        device = self.proj_in.weight.device
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise LuminaInputError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                raise LuminaInputError("t contains NaN or infinite values")
            return flow_steps(t, self.config.steps), t.to(torch.float32)
        return t.long(), t.float() / self.config.steps

    def conditioning(self, steps: Tensor, cap_feats: Tensor, cap_mask: Tensor | None) -> Tensor:
        """(B, dim) adaLN input: t_embedder(integer step) + cap_embedder(mean caption token)."""
        if cap_mask is None:  # the official all-ones mask: sum / count, the same float ops
            pooled = cap_feats.sum(dim=1) / cap_feats.shape[1]
        else:
            weights = cap_mask.to(cap_feats.dtype).unsqueeze(-1)
            pooled = (cap_feats * weights).sum(dim=1) / weights.sum(dim=1)
        return self.t_embedder(steps.float()) + self.cap_embedder(pooled)

    def forward(
        self, x: Tensor, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None = None,
        options: ForwardOptions | None = None,
    ) -> Tensor:
        options = options or DEFAULT_OPTIONS
        self._check_latent(x)
        batch, _, length = x.shape
        steps, flow_t = self.timesteps(t, batch)
        cap_feats, cap_mask = self._check_caption(batch, cap_feats, cap_mask)
        dtype, device = self.dtype, self.proj_in.weight.device
        h = self.proj_in(x.to(device=device, dtype=dtype).transpose(1, 2))
        cap_feats = cap_feats.to(device=device, dtype=dtype)
        adaln_input = self.conditioning(steps, cap_feats, cap_mask)
        info = ForwardInfo(
            model=self,  # type: ignore[arg-type]
            layout=None, rows=options.rows or single_rows(batch), rope_scaling=options.rope_scaling(float(flow_t[0])),
            dtype=dtype, device=device, t=flow_t,
        )
        if info.rows.size != batch:
            raise LuminaInputError(f"options.rows describes {info.rows.size} rows but the model batch has {batch}")
        if any(f.select_tokens(info) is not None for f in options.features):
            raise LuminaInputError(f"the {AUDIO_DIT_NAME} computes every frame; features that narrow the tokens are not supported")
        hooks = tuple(hk for hk in (f.begin(info) for f in options.features) if hk is not None)
        ctx = LayerContext(
            adaln_input=adaln_input, cap_feats=cap_feats,
            cap_mask=None if cap_mask is None or bool(cap_mask.all()) else cap_mask,
            rotations=self.rope(length, device, options, float(flow_t[0]))[None], x_mask=None, self_scale=None, hooks=hooks,
        )
        for i, block in enumerate(self.blocks):
            for hook in hooks:
                hook.before_block(i)
            h = block(h, ctx, i)
        return self.final_layer(h, adaln_input).transpose(1, 2)

    # -- validation -------------------------------------------------------------------------
    def _check_latent(self, x: Tensor) -> None:
        c = self.config
        if not isinstance(x, Tensor) or x.ndim != 3:
            raise LuminaInputError(
                f"x must be a (batch, {c.in_channels}, frames) audio latent for the {AUDIO_DIT_NAME}, "
                f"got {tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
            )
        if x.shape[1] != c.in_channels:
            raise LuminaInputError(f"x has {x.shape[1]} channels but this model takes {c.in_channels}-channel latents")
        check_audio_frames(x.shape[2], c.max_len, "x")
        if not all_finite(x):
            raise LuminaInputError("x contains NaN or infinite values")

    def _check_caption(self, batch: int, cap_feats: Tensor, cap_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        c = self.config
        if cap_feats.ndim != 3 or cap_feats.shape[0] != batch or cap_feats.shape[1] < 1:
            raise LuminaInputError(f"cap_feats must have shape ({batch}, tokens, {c.cap_feat_dim}), got {tuple(cap_feats.shape)}")
        if cap_feats.shape[-1] != c.cap_feat_dim:
            raise LuminaInputError(
                f"cap_feats width {cap_feats.shape[-1]} does not match this model's caption width {c.cap_feat_dim} "
                "(FLAN-T5-large / CLAP+T5-large give 1024); use the model's own text encoder"
            )
        if not all_finite(cap_feats):
            raise LuminaInputError("cap_feats contains NaN or infinite values")
        if cap_mask is not None:
            if tuple(cap_mask.shape) != tuple(cap_feats.shape[:2]):
                raise LuminaInputError(f"cap_mask shape {tuple(cap_mask.shape)} does not match cap_feats {tuple(cap_feats.shape[:2])}")
            cap_mask = cap_mask.to(device=self.proj_in.weight.device, dtype=torch.bool)
            if not bool(cap_mask.any(dim=1).all()):
                raise LuminaInputError("a cap_mask row marks no tokens; keep at least one caption token per row")
        return cap_feats, cap_mask


def check_audio_frames(frames: int, max_len: int, where: str = "the latent") -> None:
    """Raise a LuminaInputError unless 1 ≤ frames ≤ max_len (the model's RoPE positions)."""
    if frames < 1:
        raise LuminaInputError(f"{where} has {frames} latent frames; the audio length must be positive")
    if frames > max_len:
        raise LuminaInputError(
            f"{where} has {frames} latent frames but the model's positions stop at {max_len}; ask for a shorter audio "
            f"(at most {max_len} latent frames)"
        )


__all__ = [
    "AudioDiT", "AudioDiTConfig", "AUDIO_DIT_FAMILY", "AUDIO_DIT_PRESETS", "infer_audio_dit_config",
    "is_audio_dit_state_dict", "flow_steps", "check_audio_frames", "PackedSwiGLU", "PackedAttention", "AudioDiTBlock",
]
