"""Time our 1-D Flag-DiT (Lumina-T2Music / T2Audio) forward against the official FlagDiTv2, same weights, CPU fp32.

    python benchmarks/audio_dit_forward.py                    # official code: $LUMINA_T2X_OFFICIAL or the git mirror $LUMINA_T2X_MIRROR
    python benchmarks/audio_dit_forward.py --official PATH    # a checkout of Alpha-VLLM/Lumina-T2X, or a (bare) git repository of it
    python benchmarks/audio_dit_forward.py --quick            # 4 blocks, 3 rounds
    python benchmarks/audio_dit_forward.py --threads 1        # one core: steadier on a busy machine
    python benchmarks/audio_dit_forward.py --compile          # ours through lumina.compile_model, the official
                                                              # with its own @torch.compile SwiGLU gate enabled
    python benchmarks/audio_dit_forward.py --prepack          # ours through lumina.prepack_model (MKL-packed fp32
                                                              # linears; costs 1.5-5x the weights' memory)
    python benchmarks/audio_dit_forward.py --compile --prepack  # both: packed GEMMs inside the compiled blocks

The official model runs the way the golden tensors (tests/fixtures/golden/lumina_music_tiny) were
made on CPU: `lumina_music/models/diffusion/flag_large_dit.py` and its `component.py` imported from
the official source unedited, a `flash_attn` stand-in without `flash_attn_func` (so its fp32 path,
F.scaled_dot_product_attention with its all-ones masks, runs; the varlen kernel is never called in
fp32), torch.compile disabled for its SwiGLU gate (eager silu(w1 x)·w3 x; compiled with --compile), `Tensor.cuda` an identity
only while the RoPE table is built, apex absent (its fallback RMSNorm). The table is built by the
constructor, outside the timed region; ours is cached by the warm-up call, as across sampling steps.

The released shape: hidden 768, 32 heads (head_dim 24), 16 blocks, 20 latent channels, captions
(2, 77, 1024) (FLAN-T5-large), 312 latent frames (10 s), batch 2 (the CFG batch [uncond; cond]).
Rounds are interleaved after one warm-up call each, the order alternating (ours then official, then
official then ours, ...); prints the medians, their ratio ours/official, the paired ratio (the median
over rounds of ours/official within a round: the two calls of a round share the machine's load of
that moment, which drifts on a shared machine), the ratio of the fastest calls and the outputs' max
abs difference.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if "--compile" not in sys.argv:  # eager: the official @torch.compile SwiGLU gate runs eagerly too
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402

from lumina.audio_checkpoints import build_audio_dit  # noqa: E402
from lumina.model.audio_dit import AudioDiT, AudioDiTConfig  # noqa: E402
from rounds import interleaved_rounds, paired_ratio  # noqa: E402  (benchmarks/, the script's folder)

MIRROR = os.environ.get("LUMINA_T2X_MIRROR")
SUBDIR = "lumina_music/models"


def _install_stubs() -> None:
    """flash_attn without flash_attn_func (the official falls back to SDPA in fp32) and a varlen
    kernel that refuses to run (fp32 never reaches it)."""

    def never(*args, **kwargs):
        raise RuntimeError("flash_attn_varlen_func is not used in fp32")

    flash = types.ModuleType("flash_attn")
    flash.flash_attn_varlen_func = never  # type: ignore[attr-defined]
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.index_first_axis = padding.pad_input = padding.unpad_input = never  # type: ignore[attr-defined]
    flash.bert_padding = padding  # type: ignore[attr-defined]
    sys.modules["flash_attn"], sys.modules["flash_attn.bert_padding"] = flash, padding


def official_checkout(path: str | None, scratch: Path) -> Path:
    """A directory holding lumina_music/models/diffusion/flag_large_dit.py."""
    candidates = [Path(path)] if path else [Path(p) for p in (os.environ.get("LUMINA_T2X_OFFICIAL"), MIRROR) if p]
    for root in candidates:
        if (root / SUBDIR / "diffusion" / "flag_large_dit.py").is_file():
            return root
        git_dir = root if (root / "HEAD").is_file() else root / ".git"
        if (git_dir / "HEAD").exists():
            archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD", SUBDIR + "/diffusion"], capture_output=True)
            if archive.returncode == 0:
                subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
                return scratch
    where = path or " or ".join(str(c) for c in candidates) or "nothing given"
    sys.exit(
        f"official Lumina-T2X code not found ({where}): pass --official PATH, a checkout of "
        "https://github.com/Alpha-VLLM/Lumina-T2X or a git repository of it (or set LUMINA_T2X_OFFICIAL / LUMINA_T2X_MIRROR)"
    )


def load_official(root: Path) -> type[torch.nn.Module]:
    """The official FlagDiTv2 class (package `models.diffusion` of lumina_music, its __init__ files
    skipped so nothing else is imported)."""
    sys.pycache_prefix = tempfile.mkdtemp()
    _install_stubs()
    for name, sub in (("models", SUBDIR), ("models.diffusion", SUBDIR + "/diffusion")):
        package = types.ModuleType(name)
        package.__path__ = [str(root / sub)]  # type: ignore[attr-defined]
        sys.modules[name] = package
    module = importlib.import_module("models.diffusion.flag_large_dit")
    return module.FlagDiTv2


def build_official(cls: type[torch.nn.Module], c: AudioDiTConfig) -> torch.nn.Module:
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # its RoPE table calls .cuda(); CPU here
    try:
        return cls(in_channels=c.in_channels, context_dim=c.cap_feat_dim, hidden_size=c.dim, depth=c.n_layers,
                   num_heads=c.n_heads, max_len=c.max_len)
    finally:
        torch.Tensor.cuda = cuda


def random_state(config: AudioDiTConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights with realistic scales (the official init zeroes adaLN and the final layer,
    which would make both outputs trivially zero)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AudioDiT(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        w = torch.randn(shape, generator=g)
        if len(shape) == 2:
            w = w / shape[1] ** 0.5 * (0.5 if "adaLN" in name else 1.0)
        elif "norm" in name or name.startswith("cap_embedder.0"):
            w = 1.0 + 0.1 * w if name.endswith("weight") else 0.05 * w
        else:
            w = 0.2 * w  # biases, gates
        state[name] = w
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="Lumina-T2X checkout or git repository (default: $LUMINA_T2X_OFFICIAL, else $LUMINA_T2X_MIRROR)")
    parser.add_argument("--quick", action="store_true", help="4 blocks, 3 rounds")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--frames", type=int, default=312, help="latent frames (312 = 10 s)")
    parser.add_argument("--caption-tokens", type=int, default=77)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="ours compiled by lumina.compile_model (inductor), the "
                        "official's @torch.compile gate compiled as written; the warm-up call compiles both")
    parser.add_argument("--prepack", action="store_true", help="ours through lumina.prepack_model (weights packed once "
                        "by MKL, at the warm-up call); the official as it is")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.layers, args.repeats = 4, 3
    torch.set_grad_enabled(False)

    config = AudioDiTConfig(n_layers=args.layers)
    state = random_state(config, args.seed)
    ours = build_audio_dit(state)
    if args.compile:
        from lumina.compile import compile_model

        ours = compile_model(ours, prepack=args.prepack)  # with --prepack: packed GEMMs inside the compiled blocks
    elif args.prepack:
        from lumina.prepack import prepack_model

        ours = prepack_model(ours)
    with tempfile.TemporaryDirectory() as scratch:
        FlagDiTv2 = load_official(official_checkout(args.official, Path(scratch)))
        official = build_official(FlagDiTv2, config)
    official.load_state_dict(state, strict=True)  # our key names are the official ones
    official.eval()

    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, config.in_channels, args.frames, generator=g)
    t = torch.randint(0, 1000, (args.batch,), generator=g)  # the integer steps the official wrapper passes
    context = torch.randn(args.batch, args.caption_tokens, config.cap_feat_dim, generator=g)

    def run_ours() -> torch.Tensor:
        return ours(x, t, context)

    def run_official() -> torch.Tensor:
        return official(x, t, context)

    print(f"config: hidden {config.dim}, {config.n_heads} heads (head_dim {config.head_dim}), {args.layers} blocks, "
          f"{config.in_channels} channels, caption ({args.batch}, {args.caption_tokens}, {config.cap_feat_dim}), "
          f"{args.frames} frames, batch {args.batch}; fp32 CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"
          + ("; ours compiled" if args.compile else "") + ("; ours prepacked" if args.prepack else ""))
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        a, b = run_ours(), run_official()  # warm-up
        diff, scale = (a - b).abs().max().item(), a.abs().max().item()
        if not diff <= 1e-4 * max(1.0, scale):
            sys.exit(f"outputs disagree: max |ours - official| = {diff:.3e} (max |out| {scale:.2f})")
        mine, theirs = interleaved_rounds(run_ours, run_official, args.repeats)
    t_ours, t_theirs = statistics.median(mine), statistics.median(theirs)
    paired = paired_ratio(mine, theirs)
    print(f"{'ours ms':>9} {'official ms':>12} {'ratio':>7} {'paired ratio':>13} {'ratio of mins':>14} {'max |diff|':>11} {'max |out|':>10}")
    print(f"{t_ours * 1000:>9.1f} {t_theirs * 1000:>12.1f} {t_ours / t_theirs:>7.3f} {paired:>13.3f} {min(mine) / min(theirs):>14.3f} "
          f"{diff:>11.2e} {scale:>10.2f}")
    if args.prepack:
        from lumina.prepack import compiled_packed_bytes, prepacked_bytes

        weights = sum(p.numel() * p.element_size() for p in ours.parameters())
        packed = compiled_packed_bytes() if args.compile else prepacked_bytes(ours)
        print(f"packed weights: {packed / 2**20:.0f} MiB beside {weights / 2**20:.0f} MiB of parameters")
    print(f"medians of {args.repeats} interleaved rounds; ratio ours/official = {t_ours / t_theirs:.3f}, paired ratio "
          f"{paired:.3f} (target <= 0.85)")
    load = max(load_before, os.getloadavg()[0])
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs during the run; rerun on an idle machine for a clean ratio")


if __name__ == "__main__":
    main()
