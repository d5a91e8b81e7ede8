"""Lumina-Video, the multi-scale video Next-DiT (official Alpha-VLLM/Lumina-Video
`models/model.py: MultiScaleNextDiT`), on the shared blocks.

Differences from the image Next-DiT, all reproduced here:
- several patch entries, `all_x_embedder.<p>-<pF>` / `all_final_layer.<p>-<pF>` (spatial patch p,
  temporal patch pF), one chosen per call; tokens in (frame, row, col) raster order, patch features
  ordered (pf, ph, pw, c); a one-frame input is repeated pF times and frame 0 comes back;
- RoPE over (frame, row, col) TOKEN indices with the head split into CONCATENATED blocks
  [frame head_dim/4 | row 3·head_dim/8 | col 3·head_dim/8], each block with its own frequencies
  1/theta^(2k/d_axis) (not the interleaved layout of `lumina.model.rope`);
- adaLN input = t_embedder(t·t_scale) + cap_embedder(pooled caption) + motion_embedder(motion·motion_scale),
  the motion term zeroed for rows whose motion score is negative (0 is kept);
- every item is its own attention block (the official packed varlen sequence without [PAD]): a
  batch of one size runs as a plain batch, a list of sizes runs one plain batch per size (or, when
  features need the whole batch, padded to one length and masked, so padded slots are never read);
  the official `pad_token` parameter is kept for loading, unused.
The blocks are the shared Next-DiT block (sandwich RMSNorms, scale-and-gate adaLN, LayerNorm
KQ-norm over all heads, GQA, cross-attention reusing the rotated queries), and the forward calls
the features' hooks (`lumina.model.hooks`) the way the image forward does. The RoPE rotations are
cached per token grid (a float64 table per call cost more than a small model's forward).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import LuminaInputError
from ..finite import all_finite
from ..video_config import LuminaVideoConfig
from .attention import LayerContext
from .hooks import ForwardInfo, single_rows
from .layers import FinalLayer, TimestepEmbedder, caption_embedder, pooled_caption
from .next_dit import NextDiTBlock
from .options import DEFAULT_OPTIONS, ForwardOptions
from .rope import RopeScaling

Videos = Tensor | Sequence[Tensor]


# -- RoPE --------------------------------------------------------------------------------------
def video_rope_angles(positions: Tensor, head_dim: int, theta: float = 256.0) -> Tensor:
    """(..., 3) (frame, row, col) token indices → (..., head_dim/2) float64 angles, the three axis
    blocks concatenated [frame | row | col] with sizes head_dim/8, 3·head_dim/16, 3·head_dim/16."""
    if head_dim % 16:
        raise ValueError(f"head_dim {head_dim} must be a multiple of 16 for Lumina-Video RoPE")
    dims = (head_dim // 8 * 2, head_dim // 8 * 3, head_dim // 8 * 3)
    pos = positions.to(torch.float64)
    blocks = []
    for axis, d in enumerate(dims):
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d))
        blocks.append(pos[..., axis, None] * freqs)
    return torch.cat(blocks, dim=-1)


def video_rope_table(positions: Tensor, head_dim: int, theta: float = 256.0) -> Tensor:
    """Unit complex64 rotations for (..., 3) token positions (polar in float64, like the official table)."""
    angles = video_rope_angles(positions, head_dim, theta)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def grid_positions(frames: int, rows: int, cols: int, device: torch.device | str | None = None) -> Tensor:
    """(frames·rows·cols, 3) (frame, row, col) indices in raster order."""
    axes = [torch.arange(n, device=device) for n in (frames, rows, cols)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def video_rope_grid(frames: int, rows: int, cols: int, head_dim: int, theta: float = 256.0) -> Tensor:
    """(frames, rows, cols, head_dim/2) complex64: the official `freqs_cis[:frames, :rows, :cols]`."""
    return video_rope_table(grid_positions(frames, rows, cols), head_dim, theta).reshape(frames, rows, cols, -1)


# -- patches -----------------------------------------------------------------------------------
def patchify_videos(videos: Tensor, patch_size: int, f_patch_size: int) -> tuple[Tensor, tuple[int, int, int]]:
    """(B, C, F, H, W) → ((B, F'·H'·W', pF·p·p·C) tokens, (F', H', W') token grid), one copy for the
    whole batch. One-frame videos are repeated pF times first (the official image path)."""
    b, c, f, h, w = videos.shape
    p, pf = patch_size, f_patch_size
    if f == 1 and pf > 1:
        videos = videos.expand(b, c, pf, h, w)  # read pF times by the one copy below
        f = pf
    grid = (f // pf, h // p, w // p)
    tokens = videos.reshape(b, c, grid[0], pf, grid[1], p, grid[2], p).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return tokens.reshape(b, -1, pf * p * p * c), grid


def unpatchify_videos(
    tokens: Tensor, grid: tuple[int, int, int], patch_size: int, f_patch_size: int, channels: int, frames: int
) -> Tensor:
    """Inverse of `patchify_videos`: (B, L, pF·p·p·C) → (B, C, frames, H, W) (frame 0 of a repeated image)."""
    p, pf = patch_size, f_patch_size
    f, h, w = grid
    x = tokens.reshape(-1, f, h, w, pf, p, p, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(x.shape[0], channels, f * pf, h * p, w * p)[:, :, :frames].contiguous()  # a copy only for an image's frame 0


def patchify_video(video: Tensor, patch_size: int, f_patch_size: int) -> tuple[Tensor, tuple[int, int, int]]:
    """(C, F, H, W) → ((F'·H'·W', pF·p·p·C) tokens, (F', H', W') token grid): `patchify_videos` of one."""
    tokens, grid = patchify_videos(video[None], patch_size, f_patch_size)
    return tokens[0], grid


def unpatchify_video(
    tokens: Tensor, grid: tuple[int, int, int], patch_size: int, f_patch_size: int, channels: int, frames: int
) -> Tensor:
    """Inverse of `patchify_video`: (L, pF·p·p·C) → (C, frames, H, W)."""
    return unpatchify_videos(tokens[None], grid, patch_size, f_patch_size, channels, frames)[0]


# -- guided call -------------------------------------------------------------------------------
TimeAware = float | int | str | Sequence  # v0, or (v0, (t1, v1), (t2, v2), ...)


def time_aware_value(config: TimeAware, t: float):
    """A time-switched setting at time t: a plain value, or (v0, (t1, v1), (t2, v2), ...) → the last
    v_i whose threshold t_i <= t (thresholds ascending; the scan stops at the first t_i > t)."""
    if isinstance(config, (bool, int, float, str)):
        return config
    if isinstance(config, (tuple, list)) and config and isinstance(config[0], (int, float, str)):
        result = config[0]
        for entry in config[1:]:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise LuminaInputError(f"time-aware setting {config!r}: each switch must be a (time, value) pair")
            threshold, value = entry
            if t >= threshold:
                result = value
            else:
                break
        return result
    raise LuminaInputError(f"invalid time-aware setting {config!r}: use a value or (value, (time, value), ...)")


def parse_patch_comb(comb: str) -> tuple[int, int]:
    """'<f_patch>x<patch>' (e.g. '1x2', '2x4') → (patch_size, f_patch_size)."""
    try:
        f_patch, patch = (int(v) for v in str(comb).split("x"))
    except ValueError:
        raise LuminaInputError(f"patch combination {comb!r} must read '<temporal>x<spatial>', e.g. '1x2' or '2x4'") from None
    return patch, f_patch


def guided_velocity(
    model: "LuminaVideo", x: Tensor, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor, motion_score: Sequence,
    patch_comb: TimeAware, cfg_scale: Sequence[TimeAware], renorm_cfg: float = 0.0, *, options: ForwardOptions | None = None,
) -> Tensor:
    """fp32 guided velocity of the P rows of x: pos + Σ_i s_i·(pos − neg_i), every negative set i
    run on the same x with its own caption / t / motion rows (rows P·(i+1) … P·(i+2) of cap_feats,
    cap_mask, t, motion_score); a set whose scale resolves to ≤ 0 is not run. Settings are resolved
    at the first t. renorm_cfg > 0: an item whose guided norm reaches renorm_cfg·‖pos‖ is scaled to
    exactly that (L2 over all non-batch dims)."""
    pos = x.shape[0]
    rows = pos * (1 + len(cfg_scale))
    t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
    t = t.expand(rows) if t.ndim == 0 else t
    if cap_feats.shape[0] != rows or cap_mask.shape[0] != rows or len(motion_score) != rows or t.shape[0] != rows:
        raise LuminaInputError(
            f"{pos} samples with {len(cfg_scale)} negative sets need {rows} rows of cap_feats, cap_mask, t and "
            f"motion_score, got {cap_feats.shape[0]}, {cap_mask.shape[0]}, {t.shape[0]} and {len(motion_score)}"
        )
    now = float(t[0])
    patch, f_patch = parse_patch_comb(time_aware_value(patch_comb, now))
    scales = [float(time_aware_value(s, now)) for s in cfg_scale]
    motion = torch.tensor([float(time_aware_value(m, now)) for m in motion_score], dtype=torch.float32, device=x.device)
    sets = [0] + [i + 1 for i, s in enumerate(scales) if s > 0.0]
    pick = torch.cat([torch.arange(j * pos, (j + 1) * pos, device=x.device) for j in sets])
    out = model(
        torch.cat([x] * len(sets)), t[pick], cap_feats[pick], cap_mask[pick], motion[pick], patch, f_patch, options
    ).float()
    ori, negs = out[:pos], out[pos:].split(pos)
    guided = ori.clone()
    for s, neg in zip([s for s in scales if s > 0.0], negs):
        guided = guided + s * (ori - neg)
    if float(renorm_cfg) > 0.0:
        dims = tuple(range(1, ori.ndim))
        max_norm = torch.linalg.vector_norm(ori, dim=dims, keepdim=True) * renorm_cfg
        norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
        for i in range(pos):
            if not bool(norm[i] < max_norm[i]):
                guided[i] = guided[i] * (max_norm[i] / norm[i])
    return guided


# -- model -------------------------------------------------------------------------------------
class LuminaVideo(nn.Module):
    """`model(x, t, cap_feats, cap_mask, motion_score, patch_size, f_patch_size)` → velocity
    (t=0 noise, t=1 data), the official argument order. x: (B, C, F, H, W) or a list of (C, F, H, W)."""

    family = "lumina_video"

    def __init__(self, config: LuminaVideoConfig) -> None:
        super().__init__()
        if config.family != self.family:
            raise ValueError(f"LuminaVideo needs a lumina_video config, got {config.family}")
        self.config = c = config
        self.all_x_embedder = nn.ModuleDict(
            {f"{p}-{f}": nn.Linear(f * p * p * c.in_channels, c.dim) for p, f in c.patches}
        )
        self.all_final_layer = nn.ModuleDict(
            {f"{p}-{f}": FinalLayer(c.dim, c.adaln_dim, f * p * p * c.out_channels, with_shift=False) for p, f in c.patches}
        )
        self.t_embedder = TimestepEmbedder(c.adaln_dim)
        self.motion_embedder = TimestepEmbedder(c.adaln_dim)
        self.cap_embedder = caption_embedder(c.cap_feat_dim, c.adaln_dim)
        self.layers = nn.ModuleList([NextDiTBlock(c) for _ in range(c.n_layers)])  # type: ignore[arg-type]
        self.pad_token = nn.Parameter(torch.zeros(c.dim))  # official parameter, never used
        # (grid, device) → RoPE rotations: the float64 table costs tens of ms per call for a long
        # video and every sampling step asks for the same few grids; a plain dict, not a buffer,
        # so it stays out of the state dict (cleared when the module moves or changes dtype)
        self._rope_cache: dict[tuple, Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.t_embedder.mlp[0].weight.dtype

    ROPE_CACHE_SIZE = 16

    def _rotations(self, grid: tuple[int, int, int], device: torch.device) -> Tensor:
        """(F·H·W, head_dim/2) complex64 rotations of a token grid, computed once per (grid, device)."""
        c = self.config
        key = (grid, str(device), c.head_dim, c.rope_theta)
        table = self._rope_cache.get(key)
        if table is None:
            if len(self._rope_cache) >= self.ROPE_CACHE_SIZE:
                self._rope_cache.pop(next(iter(self._rope_cache)))  # the oldest entry
            table = video_rope_table(grid_positions(*grid, device=device), c.head_dim, c.rope_theta)
            self._rope_cache[key] = table
        return table

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._rope_cache.clear()  # .to() / .cuda() / .float(): never hand out tables on the old device
        return super()._apply(fn, *args, **kwargs)

    def conditioning(self, t: Tensor, cap_feats: Tensor, cap_mask: Tensor, motion_score: Tensor) -> Tensor:
        """(B, adaln_dim) adaLN input: time + pooled caption + motion (dropped where motion < 0)."""
        motion = motion_score.float() * self.config.motion_scale
        drop = motion < 0
        motion = self.motion_embedder(motion.masked_fill(drop, 0.0))
        motion = motion.masked_fill(drop[:, None], 0.0)
        cap = self.cap_embedder(pooled_caption(cap_feats, cap_mask))
        return self.t_embedder(t.float() * self.config.t_scale) + cap + motion

    def forward(
        self, x: Videos, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None, motion_score: Tensor | float,
        patch_size: int, f_patch_size: int, options: ForwardOptions | None = None,
    ) -> Videos:
        options = options or DEFAULT_OPTIONS
        c = self.config
        key = c.entry_key(patch_size, f_patch_size)
        list_input = not isinstance(x, Tensor)
        items = self._check_videos(x, patch_size, f_patch_size)
        batch = len(items)
        t, cap_feats, cap_mask, motion_score = self._check_conditioning(batch, t, cap_feats, cap_mask, motion_score)
        sizes = {tuple(v.shape) for v in items}
        if list_input and len(sizes) > 1 and not options.features and options.rows is None:
            # Items never interact, so each size runs as its own plain batch: no padded token
            # enters a GEMM or a norm (the official packed varlen sequence costs the same).
            # Features see the whole batch at once, so with features the padded path below runs.
            out: list[Tensor | None] = [None] * batch
            for size in sorted(sizes):
                idx = [i for i, v in enumerate(items) if tuple(v.shape) == size]
                pick = torch.tensor(idx, device=t.device)
                group = self(torch.stack([items[i] for i in idx]), t[pick], cap_feats[pick], cap_mask[pick],
                             motion_score[pick], patch_size, f_patch_size, options)
                for i, video in zip(idx, group):
                    out[i] = video
            return out  # type: ignore[return-value]
        dtype, device = self.dtype, items[0].device

        if len(sizes) == 1:  # one size: the batch is patchified, embedded and unpatchified at once
            tokens, grid = patchify_videos((x if isinstance(x, Tensor) else torch.stack(items)).to(dtype), patch_size, f_patch_size)
            grids, lengths = [grid] * batch, [tokens.shape[1]] * batch
            h, x_mask, rot = self.all_x_embedder[key](tokens), None, self._rotations(grid, device)[None]
        else:  # sizes differ (with features): padded to one length, each item masked to its own tokens
            token_lists, grids = [], []
            for video in items:
                tokens, grid = patchify_video(video.to(dtype), patch_size, f_patch_size)
                token_lists.append(tokens)
                grids.append(grid)
            lengths = [len(tk) for tk in token_lists]
            embedded = self.all_x_embedder[key](torch.cat(token_lists)).split(lengths)
            rotations = [self._rotations(g, device) for g in grids]
            longest = max(lengths)
            h = torch.stack([F.pad(e, (0, 0, 0, longest - len(e))) for e in embedded])
            rot = torch.stack([F.pad(r, (0, 0, 0, longest - len(r)), value=1.0) for r in rotations])
            x_mask = None  # sizes whose token counts agree (8×32×48 and 8×48×32) need no mask
            if any(n != longest for n in lengths):
                x_mask = torch.arange(longest, device=device)[None] < torch.tensor(lengths, device=device)[:, None]

        cap_feats = cap_feats.to(dtype)
        adaln_input = self.conditioning(t, cap_feats, cap_mask, motion_score).to(dtype)
        info = ForwardInfo(
            model=self,  # type: ignore[arg-type]
            layout=None, rows=options.rows or single_rows(batch), rope_scaling=RopeScaling(), dtype=dtype, device=device,
        )
        if info.rows.size != batch:
            raise LuminaInputError(f"options.rows describes {info.rows.size} rows but the model batch has {batch}")
        if any(f.select_tokens(info) is not None for f in options.features):
            raise LuminaInputError("Lumina-Video computes every token; features that narrow the tokens are not supported")
        hooks = tuple(hk for hk in (f.begin(info) for f in options.features) if hk is not None)
        ctx = LayerContext(
            adaln_input=adaln_input, cap_feats=cap_feats,
            cap_mask=None if bool(cap_mask.all()) else cap_mask,
            rotations=rot, x_mask=x_mask, self_scale=None, hooks=hooks,
        )
        for i, layer in enumerate(self.layers):
            for hook in hooks:
                hook.before_block(i)
            h = layer(h, ctx, i)
        out = self.all_final_layer[key](h, adaln_input)
        if len(sizes) == 1:
            videos = unpatchify_videos(out, grids[0], patch_size, f_patch_size, c.out_channels, items[0].shape[1])
            return list(videos) if list_input else videos
        return [
            unpatchify_video(out[i, : lengths[i]], grids[i], patch_size, f_patch_size, c.out_channels, items[i].shape[1])
            for i in range(batch)
        ]

    # -- guided call ------------------------------------------------------------------------
    def forward_with_multi_cfg(
        self, x: Tensor, t: Tensor, cap_feats: Tensor, cap_mask: Tensor, motion_score: Sequence,
        patch_comb: TimeAware = "1x2", cfg_scale: Sequence[TimeAware] = (), renorm_cfg: float = 0.0,
        print_info: bool = False, options: ForwardOptions | None = None,
    ) -> Tensor:
        """The official guided call, same arguments: x holds (1 + len(cfg_scale))·P rows, P positive
        samples first then one set of P rows per negative caption; cap_feats / cap_mask / t and
        motion_score (time-aware values) give each row's own. Returns x with rows [:P] replaced by
        the guided velocity, the other rows unchanged like the official (see `guided_velocity`)."""
        pos = x.shape[0] // (1 + len(cfg_scale))
        out = x.clone()
        out[:pos] = guided_velocity(
            self, x[:pos], t, cap_feats, cap_mask, motion_score, patch_comb, cfg_scale, renorm_cfg, options=options
        ).to(x.dtype)
        return out

    # -- validation -------------------------------------------------------------------------
    def _check_videos(self, x: Videos, patch_size: int, f_patch_size: int) -> list[Tensor]:
        c = self.config
        if isinstance(x, Tensor):
            if x.ndim != 5:
                raise LuminaInputError(
                    f"x must be a (batch, {c.in_channels}, frames, height, width) latent for Lumina-Video, got shape {tuple(x.shape)}"
                )
            items, names = list(x), [f"x[{i}]" for i in range(len(x))]
        else:
            items, names = list(x), [f"x[{i}]" for i in range(len(x))]
            if not items:
                raise LuminaInputError("x is an empty list; pass at least one latent")
        for name, item in zip(names, items):
            if item.ndim != 4:
                raise LuminaInputError(f"{name} must be a ({c.in_channels}, frames, height, width) latent, got shape {tuple(item.shape)}")
            ch, f, hh, ww = item.shape
            if ch != c.in_channels:
                raise LuminaInputError(f"{name} has {ch} channels but this Lumina-Video model takes {c.in_channels}")
            if hh <= 0 or ww <= 0 or hh % patch_size or ww % patch_size:
                raise LuminaInputError(f"{name}: latent size {hh}×{ww} is not a positive multiple of the patch size {patch_size}")
            if f <= 0 or (f != 1 and f % f_patch_size):
                raise LuminaInputError(
                    f"{name}: {f} latent frames is not 1 or a multiple of the temporal patch size {f_patch_size}"
                )
            if not all_finite(item):
                raise LuminaInputError(f"{name} contains NaN or infinite values")
        return items

    def _check_conditioning(
        self, batch: int, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None, motion_score: Tensor | float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c = self.config
        device = self.t_embedder.mlp[0].weight.device
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        t = t.expand(batch) if t.ndim == 0 else t
        motion = torch.as_tensor(motion_score, dtype=torch.float32, device=device)
        motion = motion.expand(batch) if motion.ndim == 0 else motion
        if t.shape != (batch,) or motion.shape != (batch,):
            raise LuminaInputError(
                f"t and motion_score must be scalars or have shape ({batch},), got {tuple(t.shape)} and {tuple(motion.shape)}"
            )
        if cap_feats.ndim != 3 or cap_feats.shape[0] != batch or cap_feats.shape[-1] != c.cap_feat_dim:
            raise LuminaInputError(
                f"cap_feats must have shape ({batch}, tokens, {c.cap_feat_dim}), got {tuple(cap_feats.shape)}"
            )
        if cap_mask is None:
            cap_mask = torch.ones(cap_feats.shape[:2], dtype=torch.bool, device=device)
        if tuple(cap_mask.shape) != tuple(cap_feats.shape[:2]):
            raise LuminaInputError(f"cap_mask shape {tuple(cap_mask.shape)} does not match cap_feats {tuple(cap_feats.shape[:2])}")
        cap_mask = cap_mask.to(device=device, dtype=torch.bool)
        if not bool(cap_mask.any(dim=1).all()):
            raise LuminaInputError("every cap_mask row must mark at least one token")
        for name, value in (("t", t), ("motion_score", motion), ("cap_feats", cap_feats)):
            if not all_finite(value):
                raise LuminaInputError(f"{name} contains NaN or infinite values")
        return t, cap_feats.to(device), cap_mask, motion


__all__ = [
    "LuminaVideo", "video_rope_angles", "video_rope_table", "video_rope_grid", "grid_positions",
    "patchify_video", "unpatchify_video", "patchify_videos", "unpatchify_videos", "time_aware_value", "parse_patch_comb", "guided_velocity",
]
