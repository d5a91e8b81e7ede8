"""Latent ⇄ token plumbing: patch feature order, [nextline]/[nextframe] packing, [PAD] batching."""

from __future__ import annotations

import pytest
import torch

from lumina.tokens import TokenLayout, pack, pad_positions, pad_sequences, patchify, unpack, unpatchify


# --- patchify / unpatchify against naive loops ----------------------------------------------
def naive_patchify(latent: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, F, H, W) → (B, F, H/p, W/p, C·p·p), features in (c, py, px) order."""
    b, c, f, h, w = latent.shape
    out = torch.empty(b, f, h // p, w // p, c * p * p, dtype=latent.dtype)
    for r in range(h // p):
        for col in range(w // p):
            feats = [latent[:, ch, :, r * p + py, col * p + px] for ch in range(c) for py in range(p) for px in range(p)]
            out[:, :, r, col] = torch.stack(feats, dim=-1)
    return out


def naive_unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, F, R, C, p·p·ch) → (B, ch, F, R·p, C·p), features read in (py, px, c) order."""
    b, f, rows, cols, _ = tokens.shape
    out = torch.empty(b, channels, f, rows * p, cols * p, dtype=tokens.dtype)
    for r in range(rows):
        for col in range(cols):
            for py in range(p):
                for px in range(p):
                    for ch in range(channels):
                        out[:, ch, :, r * p + py, col * p + px] = tokens[:, :, r, col, (py * p + px) * channels + ch]
    return out


@pytest.mark.parametrize("shape,p", [((2, 4, 1, 6, 10), 2), ((1, 3, 3, 8, 4), 2), ((1, 2, 1, 6, 9), 3)])
def test_patchify_matches_naive(shape, p, gen):
    latent = torch.randn(*shape, generator=gen)
    assert torch.equal(patchify(latent, p), naive_patchify(latent, p))


def test_patchify_4d_is_one_frame(gen):
    latent = torch.randn(2, 4, 6, 8, generator=gen)
    assert torch.equal(patchify(latent, 2), patchify(latent.unsqueeze(2), 2))
    assert patchify(latent, 2).shape == (2, 1, 3, 4, 16)


@pytest.mark.parametrize("shape,p,ch", [((2, 1, 3, 5, 32), 2, 8), ((1, 3, 2, 2, 16), 2, 4), ((1, 1, 2, 3, 18), 3, 2)])
def test_unpatchify_matches_naive(shape, p, ch, gen):
    tokens = torch.randn(*shape, generator=gen)
    assert torch.equal(unpatchify(tokens, p, ch), naive_unpatchify(tokens, p, ch))


def test_unpatchify_inverts_patchify_after_reordering(gen):
    """patchify writes (c, py, px), unpatchify reads (py, px, c): reorder and it is the identity."""
    b, c, f, h, w, p = 2, 4, 3, 6, 10, 2
    latent = torch.randn(b, c, f, h, w, generator=gen)
    tokens = patchify(latent, p)
    channel_last = tokens.unflatten(-1, (c, p, p)).permute(0, 1, 2, 3, 5, 6, 4).flatten(-3)
    assert torch.equal(unpatchify(channel_last, p, c), latent)
    # and without the reorder the two orders really differ (the test above is not vacuous)
    assert not torch.equal(unpatchify(tokens, p, c), latent)


# --- pack / unpack ---------------------------------------------------------------------------
LAYOUTS = [
    TokenLayout(1, 3, 5),
    TokenLayout(1, 3, 5, nextline=True),
    TokenLayout(1, 4, 2, nextframe=True),
    TokenLayout(3, 2, 4, nextline=True, nextframe=True),
    TokenLayout(3, 2, 4, nextline=False, nextframe=True),
]
D = 6


def make_grid(layout: TokenLayout, gen: torch.Generator, b: int = 2) -> torch.Tensor:
    return torch.randn(b, layout.frames, layout.rows, layout.cols, D, generator=gen)


def specials() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((D,), 100.0), torch.full((D,), -100.0)  # [nextline], [nextframe]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_pack_unpack_round_trip(layout, gen):
    grid = make_grid(layout, gen)
    nl, nf = specials()
    seq = pack(grid, layout, nextline_token=nl, nextframe_token=nf)
    assert seq.shape == (2, layout.length, D)
    assert torch.equal(unpack(seq, layout), grid)
    # trailing [PAD] slots are ignored
    padded = torch.cat([seq, torch.zeros(2, 5, D)], dim=1)
    assert torch.equal(unpack(padded, layout), grid)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_lengths(layout):
    expected_row = layout.cols + layout.nextline
    expected_frame = layout.rows * expected_row + layout.nextframe
    assert layout.row_length == expected_row
    assert layout.frame_length == expected_frame
    assert layout.length == layout.frames * expected_frame
    assert layout.grid_positions().shape == (layout.length, 3)
    assert torch.equal(layout.sequence_positions(), torch.arange(layout.length, dtype=torch.float32)[:, None])


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_special_tokens_at_documented_slots(layout, gen):
    """[nextline] at slot row_length-1 of every row, [nextframe] in the last slot of every frame,
    patches everywhere else in frame-major, row-major order."""
    grid = make_grid(layout, gen, b=1)
    nl, nf = specials()
    seq = pack(grid, layout, nextline_token=nl, nextframe_token=nf)[0]
    frames = seq.reshape(layout.frames, layout.frame_length, D)
    for f in range(layout.frames):
        if layout.nextframe:
            assert torch.equal(frames[f, -1], nf)
        rows = frames[f, : layout.rows * layout.row_length].reshape(layout.rows, layout.row_length, D)
        for r in range(layout.rows):
            if layout.nextline:
                assert torch.equal(rows[r, layout.row_length - 1], nl)
            assert torch.equal(rows[r, : layout.cols], grid[0, f, r])
    n_special = (seq == 100.0).all(-1).sum() + (seq == -100.0).all(-1).sum()
    assert n_special == layout.frames * (layout.rows * layout.nextline + layout.nextframe)


def test_flag_dit_image_length():
    """Official Flag-DiT: a 16×16 latent with 2×2 patches is 8 rows of (8 + [nextline]) = 72 tokens."""
    assert TokenLayout(1, 8, 8, nextline=True).length == 72
    assert TokenLayout(1, 6, 10, nextline=True).length == 66


def test_pack_rejects_wrong_grid(gen):
    with pytest.raises(ValueError, match="does not match layout"):
        pack(make_grid(TokenLayout(1, 3, 5), gen), TokenLayout(1, 3, 4))


# --- positions -------------------------------------------------------------------------------
def test_grid_positions_patches_and_specials():
    layout = TokenLayout(3, 2, 4, nextline=True, nextframe=True)
    pos = layout.grid_positions()
    assert pos.dtype == torch.float32
    frames = pos.reshape(layout.frames, layout.frame_length, 3)
    for f in range(layout.frames):
        # [nextframe]: one row past the frame's end, column 0
        assert frames[f, -1].tolist() == [f, layout.rows, 0]
        rows = frames[f, :-1].reshape(layout.rows, layout.row_length, 3)
        for r in range(layout.rows):
            for c in range(layout.cols):
                assert rows[r, c].tolist() == [f, r, c]
            # [nextline]: one column past the row's end
            assert rows[r, -1].tolist() == [f, r, layout.cols]
    # no two slots share a position
    assert len({tuple(p) for p in pos.tolist()}) == layout.length


def test_grid_positions_image_without_specials():
    pos = TokenLayout(1, 2, 3).grid_positions()
    assert pos.tolist() == [[0, r, c] for r in range(2) for c in range(3)]


# --- [PAD] batching --------------------------------------------------------------------------
def test_pad_sequences(gen):
    seqs = [torch.randn(n, D, generator=gen) for n in (4, 7, 1)]
    pad = torch.arange(D, dtype=torch.float32)
    out, mask = pad_sequences(seqs, pad)
    assert out.shape == (3, 7, D) and mask.shape == (3, 7) and mask.dtype == torch.bool
    for i, s in enumerate(seqs):
        n = s.shape[0]
        assert torch.equal(out[i, :n], s)
        assert torch.equal(out[i, n:], pad.expand(7 - n, D))
        assert mask[i, :n].all() and not mask[i, n:].any()
    assert torch.equal(pad, torch.arange(D, dtype=torch.float32))  # pad token untouched


def test_pad_sequences_casts_pad_token(gen):
    seqs = [torch.randn(2, D, generator=gen).bfloat16(), torch.randn(3, D, generator=gen).bfloat16()]
    out, _ = pad_sequences(seqs, torch.ones(D))
    assert out.dtype == torch.bfloat16


def test_pad_positions_repeats_last():
    a = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[5.0, 6.0]])
    out = pad_positions([a, b])
    assert out.shape == (2, 3, 2)
    assert torch.equal(out[0], a)
    assert torch.equal(out[1], b.expand(3, 2))


def test_patch_and_special_slots_cover_the_sequence_once():
    layout = TokenLayout(2, 2, 3, nextline=True, nextframe=True)
    patches, specials = layout.patch_slots(), layout.special_slots()
    assert patches[:6].tolist() == [0, 1, 2, 4, 5, 6] and patches[6:].tolist() == [9, 10, 11, 13, 14, 15]
    assert specials.tolist() == [3, 7, 8, 12, 16, 17]
    assert sorted(patches.tolist() + specials.tolist()) == list(range(layout.length))
    plain = TokenLayout(1, 2, 3)
    assert plain.patch_slots().tolist() == list(range(6)) and plain.special_slots().numel() == 0
