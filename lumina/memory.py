"""How much memory a sampling run needs, estimated before it starts, and a clear refusal when the
run cannot fit.

An 8192² request used to grow the process until the operating system killed it (or, under a
memory cap, until a raw `DefaultCPUAllocator: can't allocate memory`). The estimate here follows
the code paths of `lumina.model` and `lumina.sample` under `torch.inference_mode`, where a tensor
is freed as soon as its last reference goes, so the peak of a forward is the largest set of tensors
alive at one moment inside one block:

- the forward keeps the embedded sequence and the current block's input alive throughout (Flag-DiT
  also keeps the embedded grid its [nextline] tokens were concatenated to);
- self-attention: the block's normed input, the rotated queries, K before and after RoPE, V, the
  grouped-query fold copy of Q and the un-fold copy of the output (`_sdpa`), and the kernel's own
  transient (O(L) log-sum-exp and per-thread tiles for fused kernels, plus K and V repacked for
  bf16 on CPU; 2.25 × the B·H·Lq·Lk scores for the math path);
- cross-attention to the caption: all of the above plus the self-attention output and a second fold;
- the SwiGLU FFN: silu(w1 x), w3 x and their product (3 × the hidden width) beside the residuals;
  in CPU inference over row chunks once they pass 16 MiB (`lumina.model.layers.ffn_chunk_rows`):
  one chunk's two intermediates beside the earlier chunks' outputs, then their concatenation;
- apply_rope's fp32 copies of Q and K (only a copy when the model runs in half precision);
- the RoPE tables (fp32 angles and complex64 rotations, per row for padded list batches);
- the solver's latents (state, noise, k's) and the velocity call's input and patches, all fp32.

The per-forward peak is the largest of those phases; weights come on top when they are not yet
resident on the device, and an allocator allowance on top of the tensors (glibc's heap on the CPU,
block rounding on CUDA). Against torch's own allocation record (profiler) the tensor part is within
±3 % for both families, fp32 and bf16, GQA and MHA, padded list batches, the math path and
the chunked FFN;
`benchmarks/sampling_memory.py` compares the whole estimate with the process's measured peak.
Not counted: Region-Adaptive Sampling's key/value cache, feature hooks' own tensors, the text
encoder and the VAE, and `trajectory=True` stacks.

Lumina-Video runs the same Next-DiT blocks; it is estimated as Next-DiT at its finest patch entry
(the most tokens a patch schedule can reach), with its per-item RoPE tables.
"""

from __future__ import annotations

import functools
import weakref
import os
import resource
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from .config import LuminaConfig
from .model import layers
from .errors import LuminaInputError
from .video_config import LuminaVideoConfig

AnyConfig = LuminaConfig | LuminaVideoConfig

GiB = 1024**3
MiB = 1024**2

ATTENTION_BACKENDS = ("auto", "sdpa", "math", "flash_attn")

# Solver state in latents of the user's batch (fp32) at the forward's peak: the noise and the
# current state x, plus what the step keeps while it evaluates the model again (k1, the argument
# x + a·k1, …). torchdiffeq's dopri5 keeps its seven stages, the state and the error estimate.
SOLVER_LATENTS = {"euler": 2, "midpoint": 4, "heun": 4, "rk4": 7, "dopri5": 12}

# What the process needs besides the tensors (measured by benchmarks/sampling_memory.py):
# - CPU: glibc's malloc serves blocks below its mmap threshold (dynamic, at most 32 MiB on 64-bit)
#   from the heap, which keeps freed blocks resident for reuse; the heap grows to the largest set
#   of such blocks alive at once plus fragmentation between blocks of different sizes. Blocks above
#   the threshold are mapped and returned on free. A few MiB more for the interpreter and kernels.
# - CUDA: the caching allocator rounds blocks up (512 B, 2 MiB segments); a small fraction.
MMAP_THRESHOLD_MAX = 32 * MiB
HEAP_FRAGMENTATION = 0.8
CPU_FIXED_OVERHEAD = 4 * MiB
CUDA_FIXED_OVERHEAD = 8 * MiB
CUDA_ROUNDING = 0.03


@dataclass(frozen=True)
class _Request:
    """What an estimate was made for, kept so a refusal can recompute at other sizes."""

    config: AnyConfig
    items: tuple[tuple[int, int, int, int], ...]  # (channels, frames, height, width) latent of each user item
    cfg_batch: bool
    dtype: torch.dtype
    device: torch.device
    attention_backend: str
    caption_tokens: int
    caption_padded: bool
    solver: str
    param_count: int
    other_bytes: int  # non-floating parameters and buffers, which keep their dtype
    count_weights: bool


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a sampling run needs at its peak, by part.

    weights: the model's parameters and buffers (0 when they are already resident on the device,
      where the free memory already excludes them).
    activations: the tensors alive at the forward's peak besides the attention kernel's own
      transient: hidden states, norms, Q/K/V, FFN intermediates, the caption features.
    attention: the attention kernel's transient at that peak (scores for the math path).
    rope: the RoPE angle and rotation tables.
    latents: the solver's fp32 state and the velocity call's input and patches.
    allocator: what the allocator holds beyond the live tensors (glibc's heap keeps freed blocks
      under 32 MiB resident; CUDA rounds blocks up).
    overhead: a fixed allowance for the runtime (interpreter, kernels' small buffers).
    """

    weights: int
    activations: int
    attention: int
    rope: int
    latents: int
    allocator: int
    overhead: int
    tokens: int  # sequence length per model row (the longest item for padded batches)
    rows: int  # model batch rows (2 × the user batch under CFG)
    phase: str  # where inside a block the peak falls
    backend: str  # the attention kernel assumed
    request: _Request = field(repr=False, compare=False)

    @property
    def total(self) -> int:
        return self.tensor_bytes + self.allocator + self.overhead

    @property
    def tensor_bytes(self) -> int:
        """The tensors alive at the peak, weights included: what torch itself allocates."""
        return self.weights + self.activations + self.attention + self.rope + self.latents

    @property
    def run_bytes(self) -> int:
        """Everything but the weights: what sampling adds to an already loaded model."""
        return self.total - self.weights

    def summary(self) -> str:
        """"7.1 GiB (weights 6.1 GiB, activations 0.9 GiB)": the total and the parts ≥ 0.05 GiB."""
        return f"{_gib(self.total)} ({self.parts_text()})"

    def parts_text(self) -> str:
        return ", ".join(
            f"{name} {_gib(getattr(self, name))}"
            for name in ("weights", "activations", "attention", "rope", "latents", "allocator", "overhead")
            if getattr(self, name) >= GiB / 20  # what rounds to 0.0 GiB says nothing
        )


def _gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.1f} GiB"


# -- inputs ------------------------------------------------------------------------------------
def _resolve_model(
    model_or_config: torch.nn.Module | AnyConfig, dtype: torch.dtype | None, device: torch.device | str | None,
    count_weights: bool | None,
) -> tuple[AnyConfig, torch.dtype, torch.device, int, int, bool]:
    """(config, dtype, device, floating parameter count, other bytes, count_weights)."""
    if isinstance(model_or_config, (LuminaConfig, LuminaVideoConfig)):
        config = model_or_config
        from .model import build_model

        with torch.device("meta"):  # shapes only: nothing is allocated
            module = build_model(config)
        weight_device = torch.device("meta")
    else:
        module = model_or_config
        config = module.config
        weight_device = _first_weight(module).device
    tensors = list(module.parameters()) + list(module.buffers())
    floating = sum(t.numel() for t in tensors if t.is_floating_point())
    other = sum(t.numel() * t.element_size() for t in tensors if not t.is_floating_point())
    first = _first_weight(module)
    if dtype is None:
        dtype = first.dtype if first.is_floating_point() else torch.float32
    if device is None:
        device = torch.device("cpu") if weight_device.type == "meta" else weight_device
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if count_weights is None:
        # Weights already on the run's device are already missing from its free memory.
        resident = weight_device.type == device.type and (
            weight_device.type != "cuda" or weight_device.index in (None, device.index)
        )
        count_weights = not resident or first.dtype != dtype
    return config, dtype, device, floating, other, count_weights


def _first_weight(module: torch.nn.Module) -> torch.Tensor:
    """The patch embedder's weight: where and in what dtype the model's weights are."""
    embedder = getattr(module, "x_embedder", None)
    return embedder.weight if embedder is not None else next(module.parameters())


def _items(
    config: AnyConfig, latent_shape: Sequence[int] | Sequence[Sequence[int]]
) -> tuple[tuple[int, int, int, int], ...]:
    """A (B, C, h, w) or (B, C, F, h, w) shape, or a list of (C, h, w) or (C, F, h, w) item shapes
    (a padded list batch), as (C, F, h, w) items (F = 1 for images)."""
    shape = list(latent_shape)
    if shape and all(isinstance(s, int) for s in shape):
        if len(shape) not in (4, 5):
            raise LuminaInputError(
                f"latent shape {tuple(shape)} needs (batch, {config.in_channels}, h, w), or (batch, "
                f"{config.in_channels}, frames, h, w) with frames"
            )
        b, *item = shape
        if b < 1:
            raise LuminaInputError(f"latent shape {tuple(shape)} has no items")
        items = [tuple(item)] * b
    else:
        items = [tuple(s) for s in shape]
        if not items or any(len(s) not in (3, 4) for s in items):
            raise LuminaInputError(f"latent shapes {shape} need to be (channels, h, w) or (channels, frames, h, w) each")
    out = []
    for s in items:
        ch, f, h, w = s if len(s) == 4 else (s[0], 1, *s[1:])
        config.check_frames(f"latent shape {s}", f)
        config.check_latent(f"latent shape {s}", ch, h, w)
        out.append((ch, f, h, w))
    return tuple(out)


def _tokens(config: AnyConfig, frames: int, height: int, width: int) -> int:
    """Sequence length: frames · rows · cols patches, plus Flag-DiT's [nextline] per row and
    [nextframe] per frame (none for one frame); Lumina-Video: its finest patch entry's count (one
    frame is repeated to a whole temporal patch, so it is one token frame)."""
    if isinstance(config, LuminaVideoConfig):
        return max(max(1, frames // f) * (height // p) * (width // p) for p, f in config.patches)
    rows, cols = height // config.patch_size, width // config.patch_size
    if config.family != "flag_dit":
        return frames * rows * cols
    return frames * rows * (cols + 1) + (frames if frames > 1 else 0)


def resolve_attention_backend(
    config: AnyConfig, dtype: torch.dtype, device: torch.device | str, *, masked: bool, requested: str = "auto"
) -> str:
    """The kernel `lumina.model.attention.attend` will run: "flash_attn", "sdpa_flash",
    "sdpa_efficient", "sdpa_cudnn" (all O(L) memory) or "sdpa_math" (materialises the scores).

    For SDPA, torch itself is asked which kernel it would pick for these dtypes and this device
    (`torch._fused_sdp_choice` on tiny probe tensors); the answer depends on the torch build (CPU
    flash attention accepts masks since torch 2.3)."""
    if requested not in ATTENTION_BACKENDS:
        raise LuminaInputError(f"unknown attention backend {requested!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    device = torch.device(device)
    if requested == "math":
        return "sdpa_math"
    if requested == "flash_attn":
        return "flash_attn"
    if requested == "auto" and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        from .model.attention import flash_available

        if flash_available():
            return "flash_attn"
    return _sdpa_choice(config, dtype, device, masked)


@functools.lru_cache(maxsize=64)
def _sdpa_choice(config: AnyConfig, dtype: torch.dtype, device: torch.device, masked: bool) -> str:
    names = {0: "sdpa_math", 1: "sdpa_flash", 2: "sdpa_efficient", 3: "sdpa_cudnn", 4: "sdpa_overrideable"}
    try:
        from torch.nn.attention import SDPBackend

        rep = config.n_heads // config.kv_heads
        q = torch.zeros(1, config.kv_heads, 2 * rep, config.head_dim, dtype=dtype, device=device)
        k = torch.zeros(1, config.kv_heads, 3, config.head_dim, dtype=dtype, device=device)
        mask = torch.ones(1, 1, 1, 3, dtype=torch.bool, device=device) if masked else None
        choice = SDPBackend(torch._fused_sdp_choice(q, k, k, mask))
        return {SDPBackend.MATH: "sdpa_math", SDPBackend.FLASH_ATTENTION: "sdpa_flash",
                SDPBackend.EFFICIENT_ATTENTION: "sdpa_efficient"}.get(choice, names.get(int(choice.value), "sdpa_flash"))
    except Exception:  # no probe API (old torch) or the device is not usable here: the documented rules
        if device.type == "cpu":
            major, minor = (int(p) for p in torch.__version__.split(".")[:2])
            return "sdpa_math" if masked and (major, minor) < (2, 3) else "sdpa_flash"
        return "sdpa_efficient" if masked or dtype == torch.float32 else "sdpa_flash"


# -- the estimate ------------------------------------------------------------------------------
def estimate_sampling_memory(
    model_or_config: torch.nn.Module | AnyConfig,
    latent_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    cfg_batch: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    attention_backend: str = "auto",
    caption_tokens: int = 256,
    caption_padded: bool = True,
    solver: str = "euler",
    count_weights: bool | None = None,
) -> MemoryEstimate:
    """Peak bytes of `lumina.sample` (or a sampler calling the model once per step) for latents of
    `latent_shape`: (B, C, h, w), or a list of (C, h, w) item shapes for a padded list batch; with
    frames (B, C, F, h, w) or (C, F, h, w) items (tokens = F·rows·cols, plus special tokens).

    cfg_batch: conditional and unconditional rows in one forward (CFG ≠ 1 with a negative prompt).
    dtype / device: the model's (default: the model's weight dtype and device; fp32 and CPU for a
      config). attention_backend: "auto" (what `attend` picks), "sdpa", "math", "flash_attn".
    caption_tokens / caption_padded: caption length, and whether some caption is padded (then the
      cross-attention gets a mask; CFG's prompt and negative prompt usually differ in length).
    count_weights: None counts the weights unless the model's parameters already sit on `device`
      in `dtype` (their bytes are then already missing from the free memory).
    """
    config, dtype, device, params, other, count_weights = _resolve_model(model_or_config, dtype, device, count_weights)
    if solver not in SOLVER_LATENTS:
        raise LuminaInputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVER_LATENTS)}")
    items = _items(config, latent_shape)
    request = _Request(
        config=config, items=items, cfg_batch=cfg_batch, dtype=dtype, device=device,
        attention_backend=attention_backend, caption_tokens=caption_tokens, caption_padded=caption_padded,
        solver=solver, param_count=params, other_bytes=other, count_weights=count_weights,
    )
    return _estimate(request)


def _estimate(r: _Request) -> MemoryEstimate:
    c, e = r.config, torch.empty(0, dtype=r.dtype).element_size()
    half = e < 4  # apply_rope and the RMSNorms compute in fp32: a copy only when the model is not fp32
    lengths = [_tokens(c, f, h, w) for _, f, h, w in r.items]
    padded = len(set(lengths)) > 1  # same-size list items are concatenated into one plain batch
    rows = len(r.items) * (2 if r.cfg_batch else 1)
    per_row = rows // len(r.items)  # 2 under CFG
    L, D, H, KV, d, F = max(lengths), c.dim, c.n_heads, c.kv_heads, c.head_dim, c.hidden_dim
    Lc, Dc = r.caption_tokens, c.cap_feat_dim

    X = rows * L * D * e  # one hidden state (also Q, and every attention output: H·d = D)
    Xkv = rows * L * KV * d * e  # K or V
    Xf = rows * L * F * e  # one FFN intermediate
    X32, Xkv32 = rows * L * D * 4, rows * L * KV * d * 4  # apply_rope's complex products
    fold = [X] if H > KV else []  # _sdpa's fold of Q (and un-fold of the output) copies unless H == KV
    Y = rows * Lc * Dc * e  # the caption at the model dtype; each block's normed copy lives during attention

    # Alive through the whole forward (each entry one tensor: the allocator model needs sizes):
    # the embedded sequence, the current block's input (another tensor from layer 1 on), the
    # caption cast to the model dtype (a copy only when fp32 text features meet a half model).
    # Lumina-Video keeps no reference to its embedded sequence: it is the first block's input only.
    keeps_embedded = c.n_layers > 1 and not isinstance(c, LuminaVideoConfig)
    persistent = [X] + ([X] if keeps_embedded else []) + ([Y] if half else [])
    if isinstance(c, LuminaVideoConfig):  # the patchified items (pF·p²·C wide at the finest entry) stay alive
        _, f0, h0, w0 = r.items[0]
        p, pf = max(c.patches, key=lambda e_: max(1, f0 // e_[1]) * (h0 // e_[0]) * (w0 // e_[0]))
        persistent.append(rows * L * pf * p * p * c.in_channels * e)
    if padded:  # the items' own sequences stay alive beside the padded batch they were copied into
        persistent += [per_row * n * D * e for n in lengths]
    if c.family == "flag_dit":  # the last embedded grid stays alive beside its [nextline]-packed sequence
        _, f_last, h_last, w_last = r.items[-1]
        grid_rows = (1 if padded else len(r.items)) * per_row
        persistent.append(grid_rows * f_last * (h_last // c.patch_size) * (w_last // c.patch_size) * D * e)
    # RoPE tables: fp32 angles and complex64 rotations, (1, L, d/2) for one size, (B, L, d/2) for a
    # padded list batch (positions differ per item).
    rope = [(rows if padded else 1) * L * (d // 2) * size for size in (4, 8)]
    if isinstance(c, LuminaVideoConfig):  # one complex64 table per item, all alive through the forward
        rope = [rows * L * (d // 2) * 8]
    # Latents, fp32: the solver's state and k's for the user's batch, the velocity call's batched
    # input, its patches (and their cast when the model is not fp32).
    latent = sum(ch * f * h * w for ch, f, h, w in r.items) * 4
    model_in = latent * per_row
    latents = [latent] * SOLVER_LATENTS[r.solver] + [model_in] + [model_in * e // 4] * (2 if half else 1)

    backend_self = resolve_attention_backend(c, r.dtype, r.device, masked=padded, requested=r.attention_backend)
    backend_cross = resolve_attention_backend(c, r.dtype, r.device, masked=r.caption_padded, requested=r.attention_backend)
    self_kernel = _kernel_transient(backend_self, rows, H, KV, d, L, L, e, padded, r.device)
    cross_kernel = _kernel_transient(backend_cross, rows, H, KV, d, L, Lc, e, r.caption_padded, r.device)

    # Inside attention the block's normed input x_in and the normed caption Y stay alive.
    qkv = [X, Xkv, Xkv, Xkv]  # rotated Q, K before and after RoPE, V
    # Next-DiT's block keeps the attention output `attn` (a local) until it returns; Flag-DiT
    # consumes it in the residual sum.
    attn_out = [X] if c.family in ("next_dit", "lumina_video") else []
    phases: dict[str, tuple[list[int], list[int]]] = {  # phase → (live tensors, the kernel's transient)
        # q = apply_rope(q): x_in, Q, K, V, then Q's fp32 copy (half only), the complex product and
        # its cast back (half only; in fp32 the product is the result)
        "rope q": ([Y, X, X, Xkv, Xkv] + ([X32, X32, X] if half else [X32]), []),
        # k = apply_rope(k): Q before and after rotation are both alive (tuple assignment)
        "rope k": ([Y, X, X, X, Xkv, Xkv] + ([Xkv32, Xkv32, Xkv] if half else [Xkv32]), []),
        # self-attention kernel running, then its output un-folded while the fold is still alive
        "self-attention": ([Y, X] + qkv + fold + [X] + fold, self_kernel),
        # cross-attention beside the self-attention output; for H == KV its output is a view
        "cross-attention": ([Y, X] + qkv + [X] + fold + [X] + fold, cross_kernel),
        # out + out_y · tanh(gate): both outputs, the product and the sum
        "gate": ([Y, X] + qkv + [X] * 4, []),
        # SwiGLU: the residual after attention, the FFN input, silu(w1 x), w3 x and their product
        "ffn": (attn_out + [X, X, Xf, Xf, Xf], []),
    }
    chunk = layers.cpu_ffn_chunk_rows(rows * L, F, e) if r.device.type == "cpu" else None
    if chunk is not None:  # CPU inference runs the SwiGLU over row chunks (lumina.model.layers)
        full, rest = divmod(rows * L, chunk)
        parts = [chunk * D * e] * full + ([rest * D * e] if rest else [])
        Xfc = chunk * F * e
        # the last chunk: silu(w1 x) (in place) and w3 x beside the earlier chunks' outputs; then
        # the outputs and their concatenation
        phases["ffn"] = (attn_out + [X, X] + parts[:-1] + [Xfc, Xfc], [])
        phases["ffn concat"] = (attn_out + [X, X] + parts + [X], [])
    around = persistent + rope + latents
    phase, (live, kernel) = max(phases.items(), key=lambda kv: sum(kv[1][0]) + sum(kv[1][1]))

    weights = r.param_count * e + r.other_bytes if r.count_weights else 0
    peak = sum(around) + sum(live) + sum(kernel)
    if r.device.type == "cpu":
        # glibc keeps freed blocks below its mmap threshold in the heap (resident, reused, rarely
        # returned), while larger ones are mapped and unmapped: the heap grows to the largest set
        # of small tensors ever alive, plus fragmentation, and the large ones come on top.
        small = max(sum(t for t in around + v + k if t < MMAP_THRESHOLD_MAX) for v, k in phases.values())
        large = max(sum(t for t in around + v + k if t >= MMAP_THRESHOLD_MAX) for v, k in phases.values())
        allocator = max(0, int(small * (1 + HEAP_FRAGMENTATION)) + large - peak)
        overhead = CPU_FIXED_OVERHEAD
    else:
        allocator, overhead = int(CUDA_ROUNDING * peak), CUDA_FIXED_OVERHEAD
    backend = backend_self if phase == "self-attention" else backend_cross
    return MemoryEstimate(
        weights=weights, activations=sum(persistent) + sum(live), attention=sum(kernel), rope=sum(rope),
        latents=sum(latents), allocator=allocator, overhead=overhead, tokens=L, rows=rows, phase=phase, backend=backend, request=r,
    )


def _kernel_transient(
    backend: str, rows: int, H: int, KV: int, d: int, Lq: int, Lk: int, e: int, masked: bool, device: torch.device
) -> list[int]:
    """Tensors an attention kernel allocates besides its output (which the caller counts)."""
    lse = rows * H * Lq * 4  # fused kernels keep a log-sum-exp per query row in fp32
    mask = [rows * Lk * 4] if masked else []  # SDPA turns the bool key mask into an additive float one
    if backend == "sdpa_math":
        # the scores Q·Kᵀ (B·H·Lq·Lk), their softmax, the all-masked-row test (bool) and the
        # `where` that zeroes such rows (torch's _safe_softmax): 2.25 × the scores at once
        scores = rows * H * Lq * Lk * (4 if device.type == "cpu" else e)  # CPU math upcasts half
        return [scores, scores, scores // 4] + mask
    if backend == "flash_attn":
        if not masked:
            return [lse]
        # varlen: the unpadded Q, K and V copies and the zero-filled full output (the packed
        # output is the caller's)
        return [rows * Lq * H * d * e, rows * Lq * H * d * e, rows * Lk * KV * d * e, rows * Lk * KV * d * e, lse]
    if device.type != "cpu":
        return [lse] + mask
    # torch's CPU flash kernel (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp): per thread a
    # q-block × kv-block score tile and a q-block output accumulator in fp32 (plus a reduced-
    # precision copy of the tile), and, for bf16/fp16 on CPUs with AMX, K and V repacked whole.
    lq_folded = Lq * H // KV
    q_block = min(lq_folded, 256 if lq_folded >= 768 else 64 if lq_folded >= 192 else 32)
    kv_block = min(Lk, 512)
    threads = torch.get_num_threads()
    tiles = [threads * (q_block * kv_block + 2 * q_block + q_block * d) * 4]
    if e < 4:
        tiles.append(threads * q_block * kv_block * e)
        if _cpu_has_amx():  # the brgemm path packs K and V for the AMX tiles
            tiles += [rows * KV * Lk * d * e, rows * KV * Lk * d * e]
    return [lse] + mask + tiles


@functools.lru_cache(maxsize=1)
def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return True if probe is None else bool(probe())  # unknown: count the packs (the larger estimate)
    except RuntimeError:
        return True


# -- the largest size that fits ----------------------------------------------------------------
def _with(request: _Request, side: int | None = None, **changes) -> _Request:
    """The request at a square image side (px) with the same batch size, or with other settings."""
    if side is not None:
        c = request.config
        latent_side = side // c.vae_downsample
        changes["items"] = tuple((c.in_channels, f, latent_side, latent_side) for _, f, _, _ in request.items)
    return replace(request, **changes)


def _largest_side(request: _Request, budget: int, limit: int = 1 << 16) -> int:
    unit = request.config.pixel_unit

    def fits(k: int) -> bool:
        return _estimate(_with(request, k * unit)).total <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi * unit <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit // unit + 1)
    while hi - lo > 1:  # fits(lo) and not fits(hi) (or hi past the limit)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * unit


def largest_square_side(
    model_or_config: torch.nn.Module | AnyConfig, budget_bytes: int, *, batch: int = 1, **estimate_kwargs
) -> int:
    """The largest square image side in pixels (a multiple of the model's pixel unit, patch size ×
    VAE downsampling) whose estimate fits in `budget_bytes`; 0 when not even one unit fits.
    `estimate_kwargs` are `estimate_sampling_memory`'s (cfg_batch, dtype, device, ...)."""
    c = model_or_config if isinstance(model_or_config, (LuminaConfig, LuminaVideoConfig)) else model_or_config.config
    unit_latent = c.pixel_unit // c.vae_downsample
    probe = estimate_sampling_memory(model_or_config, (batch, c.in_channels, unit_latent, unit_latent), **estimate_kwargs)
    return _largest_side(probe.request, budget_bytes)


# -- free memory -------------------------------------------------------------------------------
def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes a new allocation on `device` can still get.

    CUDA: the driver's free memory plus what torch's caching allocator holds but does not use.
    CPU: the system's available memory, lowered by a cgroup memory limit (containers, systemd)
    and by an address-space or data ulimit (where an allocation fails with ENOMEM instead of the
    process being killed)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):  # older torch: fall back to the system's memory
            pass
    import psutil

    limits = [psutil.virtual_memory().available]
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        limits.append(cgroup)
    info = psutil.Process().memory_info()
    data = getattr(info, "data", info.rss)  # Linux reports the data segment (what RLIMIT_DATA caps)
    for which, used in ((resource.RLIMIT_AS, info.vms), (getattr(resource, "RLIMIT_DATA", None), data)):
        if which is None:
            continue
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - used))
    return int(max(0, min(limits)))


def _cgroup_headroom() -> int | None:
    """limit − usage of this process's cgroup (v2, else v1), None when unlimited or unknown."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified hierarchy
            base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
            limit, usage = _read_int(base, "memory.max"), _read_int(base, "memory.current")
            if limit is None:
                base = "/sys/fs/cgroup"  # inside a container the namespace root is ours
                limit, usage = _read_int(base, "memory.max"), _read_int(base, "memory.current")
        elif "memory" in controllers.split(","):
            base = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
            limit, usage = _read_int(base, "memory.limit_in_bytes"), _read_int(base, "memory.usage_in_bytes")
            if limit is None:
                base = "/sys/fs/cgroup/memory"
                limit, usage = _read_int(base, "memory.limit_in_bytes"), _read_int(base, "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(0, limit - usage)
    return None


def _read_int(directory: str, name: str) -> int | None:
    try:
        with open(os.path.join(directory, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


# -- refusing ----------------------------------------------------------------------------------
def check_fits(estimate: MemoryEstimate, available: int, *, what: str) -> None:
    """Raise a LuminaInputError unless the estimate fits in `available` bytes. The message names
    the request (`what`, e.g. "sampling 1 image of 8192×8192 px"), the estimate against the free
    memory (GiB), the largest square image that fits with the same settings, and the options."""
    if estimate.total <= available:
        return
    r = estimate.request
    device = str(r.device)
    batch = len(r.items)
    parts = estimate.parts_text() or "all parts under 0.1 GiB"
    lines = [
        f"{what} needs about {_gib(estimate.total)} of memory but only {_gib(available)} is free on {device} "
        f"(estimate: {parts}; {estimate.tokens} tokens × {estimate.rows} rows, {_dtype_name(r.dtype)}, "
        f"attention {estimate.backend})."
    ]
    side = _largest_side(r, available)
    at_batch = f"at batch {batch}, " if batch > 1 else ""
    frames = sorted({f for _, f, _, _ in r.items})
    if frames != [1]:
        at_batch += f"{' or '.join(map(str, frames))} frames, "
    unit = r.config.pixel_unit
    if side:
        lines.append(f"The largest square image that fits is {side}×{side} px ({at_batch}same settings; sides are "
                     f"multiples of {unit} px).")
    else:
        lines.append(f"Not even a {unit}×{unit} px image fits ({at_batch}same settings): free memory first "
                     "(close other programs, unload other models).")
    options = ["a smaller width × height"]
    if frames != [1]:
        options.append("fewer frames (the tokens, and most of the memory, grow with frames × width × height)")
    if batch > 1:
        one = _largest_side(_with(r, items=r.items[:1]), available)
        options.append(f"fewer images per batch (one at a time fits up to {one}×{one} px)" if one
                       else "fewer images per batch")
    if r.dtype == torch.float32:
        # resident fp32 weights would be replaced by bf16 ones: half their bytes come free
        freed = 0 if r.count_weights else r.param_count * 2
        half_side = _largest_side(_with(r, dtype=torch.bfloat16), available + freed)
        options.append("bf16 weights (load the model with dtype bf16: halves weights and activations"
                       + (f"; fits up to {half_side}×{half_side} px)" if half_side else ")"))
    if r.device.type == "cpu":
        gpu = _estimate(_with(r, device=torch.device("cuda"), dtype=torch.bfloat16, count_weights=True))
        options.append(f"a GPU (this request needs about {_gib(gpu.total)} of GPU memory in bf16, weights included)")
    options.append("tiled sampling and Context Drop, which would bound the memory at any size, are not yet available")
    lines.append("Options: " + "; ".join(options) + ".")
    raise LuminaInputError(" ".join(lines))


def describe_request(config: AnyConfig, latent_shape: Sequence[int] | Sequence[Sequence[int]]) -> str:
    """"sampling 2 images of 1024×768 px" (width × height) for check_fits' messages."""
    items = _items(config, latent_shape)
    sizes = sorted({(w * config.vae_downsample, h * config.vae_downsample) for _, _, h, w in items})
    what = " and ".join(f"{w}×{h}" for w, h in sizes)
    frames = sorted({f for _, f, _, _ in items})
    if frames == [1]:
        return f"sampling {len(items)} image{'s' if len(items) > 1 else ''} of {what} px"
    counts = " or ".join(str(f) for f in frames)
    return f"sampling {len(items)} latent{'s' if len(items) > 1 else ''} of {counts} frames at {what} px"


def check_sampling_fits(
    model: torch.nn.Module, latent_shape: Sequence[int] | Sequence[Sequence[int]], *,
    device: torch.device | str | None = None, **estimate_kwargs,
) -> MemoryEstimate:
    """Estimate a run of `model` on its device (or `device`), compare it with the memory free
    there now, and raise check_fits' error when it does not fit; returns the estimate.
    `estimate_kwargs` are `estimate_sampling_memory`'s (cfg_batch, caption_tokens, solver, ...)."""
    key = (_shape_key(latent_shape), None if device is None else str(device), tuple(sorted(estimate_kwargs.items())),
           _weights_key(model))
    cached = _ESTIMATES.setdefault(model, {})
    if key not in cached:  # a run repeats the same request every prompt: estimate it once
        cached[key] = estimate_sampling_memory(model, latent_shape, device=device, **estimate_kwargs)
    estimate = cached[key]
    check_fits(estimate, available_memory(estimate.request.device), what=describe_request(model.config, latent_shape))
    return estimate


_ESTIMATES: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _shape_key(latent_shape: Sequence[int] | Sequence[Sequence[int]]) -> tuple:
    return tuple(tuple(s) if isinstance(s, (tuple, list, torch.Size)) else int(s) for s in latent_shape)


def _weights_key(model: torch.nn.Module) -> tuple:
    """Where and in what dtype the weights are now (the estimate counts them unless resident)."""
    first = next(model.parameters(), None)
    return (None, None) if first is None else (str(first.device), first.dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


__all__ = [
    "MemoryEstimate", "estimate_sampling_memory", "largest_square_side", "available_memory", "check_fits",
    "check_sampling_fits", "describe_request",
    "resolve_attention_backend", "ATTENTION_BACKENDS", "SOLVER_LATENTS",
]
