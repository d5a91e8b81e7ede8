"""The forward pass both families share: validate, patchify and pack, embed t and caption, run the
blocks, unpack. A family file supplies its block, its final layer's form and its token layout."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..config import FAMILY_NAMES, LuminaConfig
from ..errors import LuminaInputError
from ..finite import all_finite
from ..tokens import TokenLayout, pack, pad_positions, pad_sequences, patchify, unpack, unpatchify
from .attention import LayerContext, proportional_scale
from .hooks import ForwardInfo, single_rows
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

        x: (B, C, H, W) latents, or a list of (C, H_i, W_i) latents of different sizes; with frames
        (video, multi-view), (B, C, F, H, W) latents or a list of (C, F_i, H_i, W_i) (the result has
        the same form; one frame is exactly the image path).
        t: (B,) or a scalar in [0, 1], 0 = noise. cap_feats: (B, Lc, cap_feat_dim) text-encoder
        features; cap_mask: (B, Lc), 1 for real tokens (None = all real).
        """
        options = options or DEFAULT_OPTIONS
        list_input = not isinstance(x, Tensor)
        if list_input:
            grids, is_list = self._check_items(list(x)), True
            video = grids[0].ndim == 5
            if all(g.shape == grids[0].shape for g in grids):  # same sizes: one batch, no [PAD]
                grids, is_list = [torch.cat(grids)], False
        else:
            self._check_batch(x)
            grids, is_list, video = [x], False, x.ndim == 5
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
            # Next-DiT images (2-D RoPE) beside videos (3-D): padded per item's table below
            pos = pad_positions(positions) if len({p.shape[-1] for p in positions}) == 1 else None
        else:
            seq, x_mask, pos = seqs[0], None, positions[0][None]

        scaling = options.rope_scaling(float(t[0]))

        def angles_of(p: Tensor) -> Tensor:
            return rope_angles(
                p, self.config.head_dim, self.config.rope_theta, scaling, interpolate_positions=self.interpolate_positions
            )

        if pos is None:  # each item's own table, then padded
            angles = pad_positions([angles_of(p) for p in positions])
        else:
            angles = angles_of(pos)
        self_scale = None
        if options.proportional_attention:
            base = options.base_seqlen or self.config.base_seqlen
            self_scale = proportional_scale(seq.shape[1], base, self.config.head_dim)

        cap_feats = cap_feats.to(dtype)
        adaln_input = self.t_embedder(t) + self.cap_embedder(pooled_caption(cap_feats, cap_mask))
        info = ForwardInfo(
            model=self, layout=None if is_list else layouts[0], rows=options.rows or single_rows(batch),
            rope_scaling=scaling, dtype=dtype, device=seq.device, t=t,
            row_layouts=tuple(layouts) if is_list else (layouts[0],) * batch,
        )
        if info.rows.size != batch:
            raise LuminaInputError(f"options.rows describes {info.rows.size} rows but the model batch has {batch}")
        rotations = rope_table(angles)
        active = self._selected_tokens(options, info)
        if active is not None:
            info = replace(info, active=active)
            rows = torch.arange(batch, device=seq.device)[:, None]
            rotations = rotations.expand(batch, -1, -1)[rows, active]
        hooks = tuple(h for h in (f.begin(info) for f in options.features) if h is not None)
        ctx = LayerContext(
            adaln_input=adaln_input, cap_feats=cap_feats,
            cap_mask=None if cap_mask is None or bool(cap_mask.all()) else cap_mask,
            rotations=rotations, x_mask=x_mask, self_scale=self_scale, hooks=hooks,
        )
        h = seq if active is None else seq[rows, active]
        for i, layer in enumerate(self.layers):
            for hook in hooks:
                hook.before_block(i)
            h = layer(h, ctx, i)
        out = self.final_layer(h, adaln_input)
        if active is not None:  # positions not computed stay zero; the caller fills them
            full = out.new_zeros(batch, seq.shape[1], out.shape[2])
            full[rows, active] = out
            out = full

        keep = self.config.out_channels if return_sigma else self.config.in_channels
        results = []
        for i, layout in enumerate(layouts):
            item_rows = out[i : i + 1] if is_list else out
            latent = unpatchify(unpack(item_rows, layout), self.config.patch_size, self.config.out_channels)
            results.append(latent[:, :keep] if video else latent[:, :keep].squeeze(2))
        if is_list:
            return [r[0] for r in results]
        return list(results[0]) if list_input else results[0]

    @staticmethod
    def _selected_tokens(options: ForwardOptions, info: ForwardInfo) -> Tensor | None:
        """The one feature's token selection, if any: (B, n) sequence slots."""
        selections = [(f, s) for f in options.features if (s := f.select_tokens(info)) is not None]
        if len(selections) > 1:
            names = ", ".join(type(f).__name__ for f, _ in selections)
            raise LuminaInputError(f"only one feature may narrow the computed tokens, got {names}")
        return selections[0][1] if selections else None

    # -- validation -------------------------------------------------------------------------
    def _check_batch(self, x: Tensor) -> None:
        c = self.config
        if x.ndim not in (4, 5):
            raise LuminaInputError(
                f"x must be a (batch, {c.in_channels}, height, width) latent, or (batch, {c.in_channels}, frames, "
                f"height, width) with frames, for {FAMILY_NAMES[self.family]}, got shape {tuple(x.shape)}"
            )
        self._check_latent("x", x.shape[1:])
        _check_finite("x", x)

    def _check_items(self, items: list[Tensor]) -> list[Tensor]:
        if not items:
            raise LuminaInputError("x is an empty list; pass at least one latent")
        c = self.config.in_channels
        for i, item in enumerate(items):
            if item.ndim not in (3, 4):
                raise LuminaInputError(
                    f"x[{i}] must be a ({c}, height, width) latent, or ({c}, frames, height, width) with frames, "
                    f"got shape {tuple(item.shape)}"
                )
            if item.ndim != items[0].ndim:
                want = f"({c}, height, width)" if items[0].ndim == 3 else f"({c}, frames, height, width)"
                raise LuminaInputError(
                    f"x[{i}] must be a {want} latent like x[0] (shape {tuple(items[0].shape)}), got shape "
                    f"{tuple(item.shape)}: a list cannot mix images and latents with frames; give images as "
                    f"({c}, 1, height, width) (one frame) to batch them with videos"
                )
            self._check_latent(f"x[{i}]", item.shape)
            _check_finite(f"x[{i}]", item)
        return [item.unsqueeze(0) for item in items]

    def _check_latent(self, where: str, shape: Sequence[int]) -> None:
        """(C, H, W), or (C, F, H, W) with frames."""
        if len(shape) == 4:
            channels, frames, height, width = shape
            self.config.check_frames(where, frames)
            shape = (channels, height, width)
        self.config.check_latent(where, *shape)

    def _check_conditioning(
        self, batch: int, t: Tensor | float, cap_feats: Tensor, cap_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        c = self.config
        device = self.x_embedder.weight.device
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        _check_finite("t", t)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise LuminaInputError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        if cap_feats.ndim != 3 or cap_feats.shape[0] != batch:
            raise LuminaInputError(
                f"cap_feats must have shape ({batch}, tokens, {c.cap_feat_dim}), got {tuple(cap_feats.shape)}"
            )
        _check_finite("cap_feats", cap_feats)
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


def _check_finite(name: str, value: Tensor) -> None:
    """One reduction per input: NaN or inf in would come out as a black image, reported as success."""
    if not all_finite(value):
        raise LuminaInputError(
            f"{name} contains NaN or infinite values; check what produced it (a text encoder or VAE run in fp16 "
            "can overflow: use bf16 or fp32)"
        )
