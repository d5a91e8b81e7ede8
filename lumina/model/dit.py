"""The forward pass both families share: validate, patchify and pack, embed t and caption, run the
blocks, unpack. A family file supplies its block, its final layer's form and its token layout."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..config import FAMILY_NAMES, LuminaConfig
from ..errors import LuminaInputError
from ..tokens import TokenLayout, pack, pad_positions, pad_sequences, patchify, unpack, unpatchify
from ..features.compositional import RegionalPrompts, patch_weights
from ..features.style_shared import SharedAttention
from .attention import LayerContext, RegionalContext, SharedContext, proportional_scale
from .layers import FinalLayer, TimestepEmbedder, caption_embedder, pooled_caption
from .options import DEFAULT_OPTIONS, ForwardOptions
from .rope import rope_angles, rope_table

Latents = Tensor | Sequence[Tensor]


class LuminaDiT(nn.Module):
    """Base class; `model(x, t, cap_feats, cap_mask)` returns the velocity (t=0 noise, t=1 data)."""

    family: ClassVar[str]
    final_shift: ClassVar[bool]  # Flag-DiT's final adaLN has shift and scale, Next-DiT's scale only

    def __init__(self, config: LuminaConfig) -> None:
        super().__init__()
        if config.family != self.family:
            raise ValueError(f"{type(self).__name__} needs a {self.family} config, got {config.family}")
        self.config = config
        c = config
        self.x_embedder = nn.Linear(c.patch_features, c.dim)
        self.t_embedder = TimestepEmbedder(c.adaln_dim)
        self.cap_embedder = caption_embedder(c.cap_feat_dim, c.adaln_dim)
        self.layers = nn.ModuleList([self.make_block(c) for _ in range(c.n_layers)])
        self.final_layer = FinalLayer(c.dim, c.adaln_dim, c.patch_size**2 * c.out_channels, self.final_shift)
        self.pad_token = nn.Parameter(torch.zeros(c.dim))

    # -- family hooks -----------------------------------------------------------------------
    def make_block(self, config: LuminaConfig) -> nn.Module:
        raise NotImplementedError

    def token_layout(self, frames: int, rows: int, cols: int) -> TokenLayout:
        raise NotImplementedError

    def positions(self, layout: TokenLayout) -> Tensor:
        """(L, A) RoPE positions of each slot."""
        raise NotImplementedError

    def embed_grid(self, grid: Tensor, layout: TokenLayout) -> Tensor:
        """(B, F, R, C, D) embedded patches → (B, L, D) sequence."""
        return pack(grid, layout)

    interpolate_positions: ClassVar[bool] = False

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self, x: Latents, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None = None,
        options: ForwardOptions | None = None, *, return_sigma: bool = False,
    ) -> Latents:
        """Velocity for the C latent channels (with return_sigma, all 2C output channels).

        x: (B, C, H, W) latents, or a list of (C, H_i, W_i) latents of different sizes.
        t: (B,) or a scalar in [0, 1], 0 = noise. cap_feats: (B, Lc, cap_feat_dim) text-encoder
        features; cap_mask: (B, Lc), 1 for real tokens (None = all real).
        """
        options = options or DEFAULT_OPTIONS
        list_input = not isinstance(x, Tensor)
        if list_input:
            grids, is_list = self._check_items(list(x)), True
            if all(g.shape == grids[0].shape for g in grids):  # same sizes: one batch, no [PAD]
                grids, is_list = [torch.cat(grids)], False
        else:
            self._check_batch(x)
            grids, is_list = [x], False
        batch = sum(g.shape[0] for g in grids)
        t, cap_feats, cap_mask = self._check_conditioning(batch, t, cap_feats, cap_mask)
        dtype = self.x_embedder.weight.dtype

        seqs, layouts, positions = [], [], []
        for g in grids:
            patches = patchify(g.to(dtype), self.config.patch_size)  # (b, F, R, C, p·p·ch)
            layout = self.token_layout(*patches.shape[1:4])
            if layout.frames == 1:  # embed the (b, R, C, ·) grid, the shape the official hooks see
                embedded = self.x_embedder(patches[:, 0]).unsqueeze(1)
            else:
                embedded = self.x_embedder(patches)
            seqs.append(self.embed_grid(embedded, layout))
            layouts.append(layout)
            positions.append(self.positions(layout).to(g.device))
        if is_list:
            seq, x_mask = pad_sequences([s[0] for s in seqs], self.pad_token)
            pos = pad_positions(positions)
        else:
            seq, x_mask, pos = seqs[0], None, positions[0][None]

        scaling = options.rope_scaling(float(t[0]))
        angles = rope_angles(
            pos, self.config.head_dim, self.config.rope_theta, scaling, interpolate_positions=self.interpolate_positions
        )
        self_scale = None
        if options.proportional_attention:
            base = options.base_seqlen or self.config.base_seqlen
            self_scale = proportional_scale(seq.shape[1], base, self.config.head_dim)

        cap_feats = cap_feats.to(dtype)
        adaln_input = self.t_embedder(t) + self.cap_embedder(pooled_caption(cap_feats, cap_mask))
        ctx = LayerContext(
            adaln_input=adaln_input, cap_feats=cap_feats,
            cap_mask=None if cap_mask is None or bool(cap_mask.all()) else cap_mask,
            rotations=rope_table(angles), x_mask=x_mask, self_scale=self_scale,
        )
        if options.regions is not None or options.shared_attention is not None:
            if is_list:
                raise LuminaInputError("regional prompts and shared attention need one latent size per batch, not a list")
            ctx.regional = self._regional_context(options.regions, layouts[0], batch, dtype, seq.device)
            ctx.shared = self._shared_context(options.shared_attention, layouts[0], batch, scaling, seq.device)
        active = self._sparse_positions(options, ctx, layouts, is_list, batch)
        rows = None if active is None else torch.arange(batch, device=seq.device)[:, None]
        h = seq if active is None else seq[rows, active]
        for i, layer in enumerate(self.layers):
            ctx.layer = i
            h = layer(h, ctx)
        out = self.final_layer(h, adaln_input)
        if active is not None:  # positions not computed stay zero; the sampler fills them
            full = out.new_zeros(batch, seq.shape[1], out.shape[2])
            full[rows, active] = out
            out = full

        keep = self.config.out_channels if return_sigma else self.config.in_channels
        results = []
        for i, layout in enumerate(layouts):
            rows = out[i : i + 1] if is_list else out
            latent = unpatchify(unpack(rows, layout), self.config.patch_size, self.config.out_channels)
            results.append(latent[:, :keep].squeeze(2))
        if is_list:
            return [r[0] for r in results]
        return list(results[0]) if list_input else results[0]

    # -- per-call features ------------------------------------------------------------------
    def _sparse_positions(
        self, options: ForwardOptions, ctx: LayerContext, layouts: list[TokenLayout], is_list: bool, batch: int
    ) -> Tensor | None:
        """Region-adaptive sampling: narrow the context to each row's computed sequence positions
        ((B, n) indices, None = all): the active patches plus every [nextline] token."""
        sparse = options.sparse
        if sparse is None:
            return None
        layout = layouts[0]
        if is_list or layout.frames != 1 or ctx.shared is not None:
            raise LuminaInputError(
                "region-adaptive sampling runs on image latents of one size per batch, without shared attention; "
                "turn it off for videos, mixed sizes or style-aligned batches"
            )
        ctx.sparse = sparse
        patches = sparse.rows(batch)
        if patches is None:
            return None
        device = ctx.rotations.device
        active = layout.patch_slots().to(device)[patches.to(device)]
        specials = layout.special_slots().to(device)
        if specials.numel():
            active = torch.cat([active, specials.expand(batch, -1)], dim=1).sort(dim=1).values
        ctx.active = active
        rows = torch.arange(batch, device=device)[:, None]
        ctx.rotations = ctx.rotations.expand(batch, -1, -1)[rows, active]
        if ctx.regional is not None:
            rg = ctx.regional
            picked = active[rg.rows]  # (n, L') positions of the rows that use regions
            ctx.regional = replace(
                rg, weights=rg.weights[:, picked].permute(1, 0, 2), global_weight=rg.global_weight[picked]
            )
        return active

    def _regional_context(
        self, regions: RegionalPrompts | None, layout: TokenLayout, batch: int, dtype: torch.dtype, device: torch.device
    ) -> RegionalContext | None:
        if regions is None:
            return None
        if regions.cap_feats.shape[-1] != self.config.cap_feat_dim:
            raise LuminaInputError(
                f"regional caption width {regions.cap_feats.shape[-1]} does not match the model's {self.config.cap_feat_dim}"
            )
        rows = tuple(range(batch)) if regions.rows is None else regions.rows
        if any(not 0 <= r < batch for r in rows):
            raise LuminaInputError(f"regional rows {rows} are outside the batch of {batch}")
        p = self.config.patch_size
        per_patch = patch_weights(regions.masks.to(device), layout.rows * p, layout.cols * p, p)  # (R, rows, cols)
        grid = per_patch.permute(1, 2, 0)[None, None]  # (1, 1, rows, cols, R): special tokens get weight 0
        weights = pack(grid, layout, *self._zero_special_tokens(layout, grid))[0].T  # (R, L)
        cap_mask = regions.cap_mask.to(device, torch.bool)
        empty = (~cap_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise LuminaInputError(
                f"regional captions {empty} mark no tokens; attention over no keys is undefined. "
                "Keep at least the BOS token of every regional prompt"
            )
        return RegionalContext(
            rows=torch.tensor(rows, dtype=torch.long, device=device), cap_feats=regions.cap_feats.to(device, dtype),
            cap_mask=None if bool(cap_mask.all()) else cap_mask, weights=weights, global_weight=1 - weights.sum(0),
        )

    @staticmethod
    def _zero_special_tokens(layout: TokenLayout, grid: Tensor) -> tuple[Tensor | None, Tensor | None]:
        zero = grid.new_zeros(grid.shape[-1])
        return (zero if layout.nextline else None), (zero if layout.nextframe else None)

    def _shared_context(
        self, shared: SharedAttention | None, layout: TokenLayout, batch: int, scaling, device: torch.device
    ) -> SharedContext | None:
        if shared is None:
            return None
        if shared.pairs is None:
            shared = shared.resolve(batch)
        if not shared.pairs:
            return None
        if any(not (0 <= t < batch and 0 <= r < batch) for t, r in shared.pairs):
            raise LuminaInputError(f"shared-attention pairs {shared.pairs} are outside the batch of {batch}")
        pos = self.positions(layout)
        appended = pos + (layout.length if pos.shape[-1] == 1 else torch.tensor([float(layout.rows), 0.0]))
        angles = rope_angles(
            appended[None].to(device), self.config.head_dim, self.config.rope_theta, scaling,
            interpolate_positions=self.interpolate_positions,
        )
        targets, refs = zip(*shared.pairs)
        return SharedContext(
            targets=torch.tensor(targets, device=device), references=torch.tensor(refs, device=device),
            rotations=rope_table(angles), logit_bias=shared.logit_bias, layers=shared.layers,
        )

    # -- validation -------------------------------------------------------------------------
    def _check_batch(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 4:
            raise LuminaInputError(
                f"x must be a (batch, {c.in_channels}, height, width) latent for {FAMILY_NAMES[self.family]}, "
                f"got shape {tuple(x.shape)}"
            )
        self._check_latent("x", x.shape[1:])

    def _check_items(self, items: list[Tensor]) -> list[Tensor]:
        if not items:
            raise LuminaInputError("x is an empty list; pass at least one latent")
        for i, item in enumerate(items):
            if item.ndim != 3:
                raise LuminaInputError(
                    f"x[{i}] must be a ({self.config.in_channels}, height, width) latent, got shape {tuple(item.shape)}"
                )
            self._check_latent(f"x[{i}]", item.shape)
        return [item.unsqueeze(0) for item in items]

    def _check_latent(self, where: str, shape: Sequence[int]) -> None:
        c, p = self.config, self.config.patch_size
        ch, hgt, wid = shape
        if ch != c.in_channels:
            raise LuminaInputError(
                f"{where} has {ch} channels but this {FAMILY_NAMES[self.family]} model takes {c.in_channels}-channel "
                f"latents; encode images with the matching VAE"
            )
        if hgt % p or wid % p or hgt == 0 or wid == 0:
            raise LuminaInputError(
                f"{where} latent size {hgt}×{wid} is not a positive multiple of the patch size {p}; "
                f"use an image size that is a multiple of {p * c.vae_downsample} pixels"
            )

    def _check_conditioning(
        self, batch: int, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        c = self.config
        device = self.x_embedder.weight.device
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise LuminaInputError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        if cap_feats.ndim != 3 or cap_feats.shape[0] != batch:
            raise LuminaInputError(
                f"cap_feats must have shape ({batch}, tokens, {c.cap_feat_dim}), got {tuple(cap_feats.shape)}"
            )
        if cap_feats.shape[-1] != c.cap_feat_dim:
            raise LuminaInputError(
                f"cap_feats width {cap_feats.shape[-1]} does not match this {FAMILY_NAMES[self.family]} model's "
                f"caption width {c.cap_feat_dim} (Gemma-2B gives 2048, LLaMA-2-7B 4096); use the text encoder the model was trained with"
            )
        if cap_mask is not None:
            if tuple(cap_mask.shape) != tuple(cap_feats.shape[:2]):
                raise LuminaInputError(f"cap_mask shape {tuple(cap_mask.shape)} does not match cap_feats {tuple(cap_feats.shape[:2])}")
            cap_mask = cap_mask.to(device=device, dtype=torch.bool)
            empty = (~cap_mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise LuminaInputError(
                    f"cap_mask rows {empty} mark no tokens; attention over no keys is undefined. "
                    "Keep at least the BOS token of an empty prompt"
                )
        return t, cap_feats.to(device), cap_mask
