"""`lumina.compile_model`: the transformer blocks run through torch.compile (inductor), the rest eager.

Regional compilation: every block of a model is an instance of one class (Next-DiT's, Flag-DiT's;
Lumina-Video uses Next-DiT's; the audio DiT's `AudioDiTBlock`, kept in `blocks`, its official
name), so the class's `forward` is compiled once and the compiled code
serves every block (torch.compile lifts a block's weights to graph inputs, so the guards check
their shapes and dtypes, not which block they belong to). Compiling one block costs about what the
whole model would, divided by the number of layers; the embedders, the RoPE table and the
final layer stay eager (they run once per forward).

What is left eager, and why:
- a call whose features act inside attention (a `ForwardHook` overriding any attention method:
  regional prompts, style-shared attention, Context Drop, gate sparsity, …) runs the eager block
  for that call: the hooks are arbitrary Python, so compiling them would compile a new graph per
  feature and configuration. Hooks that only act between blocks (`before_block`, e.g. the ComfyUI
  interrupt check) are called by the eager forward loop and keep the compiled path;
- the compiled block gets the RoPE rotations as real [cos, sin] pairs (`rope.real_rotations`, a
  view) instead of complex numbers, which inductor cannot generate code for; the result is the
  same to the bit (tests/lumina/test_compile.py).

Recompilation: t reaches the blocks only as the adaLN input tensor, so the sampling steps reuse one
graph. With `dynamic=None` (torch's default) the first size compiles a static graph and the first
different size a dynamic one that every later size reuses; `dynamic=False` compiles each size once
(torch keeps up to `torch._dynamo.config.recompile_limit` of them, 8 by default, then runs new
sizes eager). One exception to "every later size": on CPU, inference whose SwiGLU activations pass
16 MiB runs the FFN over row chunks (`lumina.model.layers.ffn_chunk_rows`), and the chunk count is
part of the graph, so a dynamic graph serves the sizes with its count (a band of 2048 rows for a
hidden width of 2048) and a size with another count compiles its own. A padded caption alone (CFG's
empty negative) is one masked attention call inside the graph; in inference that is decided in the
graph too, so the block stays one graph. A list of latent sizes runs attention row by row over each
row's real tokens. Whether a padded batch goes row by row, and the rows' lengths, are otherwise
decided eager (`attention._attend_by_rows` is excluded from tracing): the block's graph splits
there, but no length becomes a guard, so a training batch whose caption lengths change every step
reuses one graph (were the lengths guards, each new one would recompile the block until torch's
limit and then run it eager). Grad mode and inference tensors are part of torch's guards too: calls
under `torch.inference_mode` (lumina.sample, ComfyUI) and under `torch.no_grad` compile separately.

Nothing is set on the model passed in: `compile_model` returns a shallow clone whose blocks are
copies (their own class, `Compiled<Block>`) sharing every parameter and submodule with the
original, so the original keeps running eager, weights changed on either (a LoRA patch, `.to()`)
are seen by both, and state-dict keys are unchanged.
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from .errors import LuminaError, LuminaInputError
from .model.attention import LayerContext
from .model.hooks import ForwardHook
from .model.rope import real_rotations
from .prepack import is_prepacked, packing_backend, prepack_available

if TYPE_CHECKING:
    from .model.dit import LuminaDiT
    from .model.audio_dit import AudioDiT
    from .model.lumina_video import LuminaVideo

BLOCK_LISTS = ("layers", "blocks")  # where a family keeps its transformer blocks (AudioDiT: `blocks`)

log = logging.getLogger("lumina.compile")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_ATTENTION_METHODS = ("self_attention_keys", "after_self_attention", "cross_attention_heads", "after_cross_attention")


@dataclass
class CompileStats:
    """What the compiled blocks of one `compile_model` result did, counted per block call.

    compiles: block calls during which torch compiled new graphs (the first call at a new size,
      dtype or mask layout); compile_seconds: their wall time, compilation plus that one block run.
    compiled_calls: block calls that ran compiled code (compiles included).
    eager_calls: block calls run eager because a feature acts inside attention."""

    mode: str
    dynamic: bool | None
    backend: str = "inductor"
    prepack: bool = False
    compiles: int = 0
    compile_seconds: float = 0.0
    compiled_calls: int = 0
    eager_calls: int = 0


@dataclass
class _Settings:
    mode: str
    dynamic: bool | None
    backend: str
    prepack: bool
    stats: CompileStats
    contexts: dict = field(default_factory=dict)  # id(ctx) → (weakref to ctx, ctx for the compiled block)

    def plain_context(self, ctx: LayerContext) -> LayerContext:
        """ctx with real RoPE rotations and no hooks, built once per forward (every block gets the
        same ctx), so padded-mask lengths cached per mask tensor stay cached."""
        entry = self.contexts.get(id(ctx))
        if entry is not None and entry[0]() is ctx:
            return entry[1]
        plain = replace(ctx, rotations=real_rotations(ctx.rotations), hooks=())
        self.contexts.clear()  # one forward at a time is the common case; a miss only rebuilds
        self.contexts[id(ctx)] = (weakref.ref(ctx), plain)
        return plain


def acts_in_attention(hook: ForwardHook) -> bool:
    """Whether a hook overrides any of the attention-level methods (those run inside a block)."""
    return any(getattr(type(hook), name) is not getattr(ForwardHook, name) for name in _ATTENTION_METHODS)


_COMPILED_FORWARDS: dict[tuple, Callable] = {}  # (block class, mode, dynamic, backend, prepack) → compiled forward
_COMPILED_CLASSES: dict[type, type] = {}  # block class → its Compiled<Block> subclass


def _compiled_forward(block_class: type, mode: str, dynamic: bool | None, backend: str, prepack: bool) -> Callable:
    key = (block_class, mode, dynamic, backend, prepack)
    if key not in _COMPILED_FORWARDS:
        if prepack:  # the linears rewritten to the packed op, then `backend` (lumina.prepack.packing_backend)
            _COMPILED_FORWARDS[key] = torch.compile(block_class.forward, backend=packing_backend(backend, mode, dynamic),
                                                    dynamic=dynamic)
        else:  # modes are inductor's; other backends take none
            kwargs = {"mode": mode} if backend == "inductor" else {}
            _COMPILED_FORWARDS[key] = torch.compile(block_class.forward, backend=backend, dynamic=dynamic, **kwargs)
    return _COMPILED_FORWARDS[key]


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compiled_block_class(block_class: type) -> type:
    """`Compiled<Block>`: the block's class with a forward that runs the compiled code."""
    if block_class not in _COMPILED_CLASSES:
        eager_forward = block_class.forward

        def forward(self: nn.Module, x: Tensor, ctx: LayerContext, layer: int = 0) -> Tensor:
            settings: _Settings = self._lumina_compile
            stats = settings.stats
            if torch.compiler.is_compiling() or any(acts_in_attention(h) for h in ctx.hooks):
                if not torch.compiler.is_compiling():
                    stats.eager_calls += 1
                return eager_forward(self, x, ctx, layer)
            compiled = _compiled_forward(block_class, settings.mode, settings.dynamic, settings.backend, settings.prepack)
            if x._base is not None:
                # the first block's input is a view (of the packed sequence), the others' are not:
                # a dynamic graph guards on the view's base, so give every block the same kind of input
                x = x.clone() if x.requires_grad else x.detach()
            graphs, start = _graph_count(), time.perf_counter()
            # `layer` only tells hooks where they are, and the compiled call has none: a constant
            # keeps torch from specialising (and recompiling) on it where a padded mask splits the graph
            try:
                out = compiled(self, x, settings.plain_context(ctx), 0)
            except torch._dynamo.exc.BackendCompilerFailed as err:  # e.g. no C++ compiler for inductor's CPU code
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise LuminaError(
                    f"torch.compile ({settings.backend}) could not compile {block_class.__name__}: {first[:300]}. "
                    "Inductor needs a working C++ compiler on CPU (g++ or clang; set CXX) and Triton on GPU; "
                    "run the model uncompiled (the Model Loader's compile off) until it is installed"
                ) from err
            stats.compiled_calls += 1
            if _graph_count() != graphs:
                seconds = time.perf_counter() - start
                stats.compiles += 1
                stats.compile_seconds += seconds
                log.info("compiled %s for x %s %s in %.1f s", block_class.__name__, tuple(x.shape), x.dtype, seconds)
            return out

        forward.__doc__ = f"{block_class.__name__}.forward through torch.compile (lumina.compile)."
        _COMPILED_CLASSES[block_class] = type(f"Compiled{block_class.__name__}", (block_class,), {"forward": forward})
    return _COMPILED_CLASSES[block_class]


def _eager_class(block_class: type) -> type:
    for base, compiled in _COMPILED_CLASSES.items():
        if compiled is block_class:
            return base
    return block_class


def compile_model(
    model: "LuminaDiT | LuminaVideo | AudioDiT", *, mode: str = "default", dynamic: bool | None = None, backend: str = "inductor",
    prepack: bool = False,
) -> "LuminaDiT | LuminaVideo | AudioDiT":
    """A clone of `model` whose transformer blocks run through torch.compile (inductor); the model
    passed in is left as it was. The weights are shared, not copied.

    mode: torch.compile's mode (one of COMPILE_MODES; "default" is the quickest to compile).
    dynamic: torch.compile's dynamic-shape setting (None: static for the first size, dynamic from
    the first different one; False: one graph per size; True: dynamic from the start).
    backend: torch.compile's backend; "inductor" generates the fused code, "eager" / "aot_eager"
    only trace (for debugging, and for tests of what recompiles: the guards are the same).
    prepack: the blocks' fp32 CPU linears run on MKL-packed weights inside the compiled code
    (lumina.prepack: the graph's linears become the op `lumina::packed_linear`; graphs traced with
    gradients keep torch's GEMMs); the packings are held beside the weights.
    Compilation happens at the first call of each new size/dtype; `compile_stats(clone)` reports
    how many block calls compiled and how long they took (also logged on "lumina.compile").
    Outputs equal eager ones within float rounding (tests/lumina/test_compile.py states the bound).
    """
    if is_prepacked(model):
        raise LuminaInputError("compile_model does not take a prepack_model clone: pass the loaded model with "
                               "prepack=True for compiled blocks with packed weights")
    if prepack and not prepack_available():
        raise LuminaError("this torch build has no MKL packed GEMM (torch.ops.mkl._mkl_linear): compile without prepack")
    if mode not in COMPILE_MODES:
        raise LuminaInputError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if dynamic not in (None, True, False):
        raise LuminaInputError(f"dynamic={dynamic!r} must be None, True or False")
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise LuminaInputError(f"torch.compile backend {backend!r} is not one of {', '.join(backends)}")
    attribute = next((name for name in BLOCK_LISTS if isinstance(getattr(model, name, None), nn.ModuleList)), None)
    layers = getattr(model, attribute) if attribute else None
    if not isinstance(model, nn.Module) or layers is None or len(layers) == 0:
        raise LuminaInputError(
            f"compile_model needs a Lumina model (lumina.load_model / load_video_model / load_audio_model), got {type(model).__name__}"
        )
    settings = _Settings(mode, dynamic, backend, bool(prepack), CompileStats(mode, dynamic, backend, bool(prepack)))
    blocks = []
    for block in layers:
        copied = copy.copy(block)  # shares _parameters / _modules / _buffers with the original block
        copied.__class__ = _compiled_block_class(_eager_class(type(block)))
        copied._lumina_compile = settings
        blocks.append(copied)
    clone = copy.copy(model)
    clone._modules = dict(model._modules)  # own module table, so the block list can differ; same submodules
    setattr(clone, attribute, nn.ModuleList(blocks))
    clone._lumina_compile = settings
    return clone


def is_compiled(model: nn.Module) -> bool:
    """Whether `model` came from `compile_model` (by attribute, not class: ComfyUI imports this
    package a second time under the node pack's name)."""
    settings = getattr(model, "_lumina_compile", None)
    return type(getattr(settings, "stats", None)).__name__ == CompileStats.__name__


def compile_stats(model: nn.Module) -> CompileStats:
    """The counters of a `compile_model` result (see CompileStats)."""
    if not is_compiled(model):
        raise LuminaInputError("this model was not made by lumina.compile_model; compile it first")
    return model._lumina_compile.stats


__all__ = ["compile_model", "compile_stats", "is_compiled", "CompileStats", "COMPILE_MODES", "acts_in_attention"]
