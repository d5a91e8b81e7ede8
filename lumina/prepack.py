"""`lumina.prepack_model`: on CPU, fp32 linears run on weights MKL has packed once (inference only).

A plain `F.linear` on CPU has MKL repack the weight matrix into its blocked GEMM layout at every
call. MKL can keep that layout (`cblas_sgemm_pack`); torch exposes it as
`torch.ops.mkl._mkl_reorder_linear_weight` / `_mkl_linear`, the pair inductor's freezing pass uses on
CPU. At the released audio DiT's shape (2 × 312 tokens, 768 → 768 / 2304 / 4096) a packed GEMM
takes 8-13 % less time and a forward 3-10 % less (benchmarks/audio_dit_forward.py --prepack
measures it against the official model).

How: a shallow clone of the model whose forward runs inside a TorchFunctionMode that sends every
`F.linear` (nn.Linear's, and the audio DiT's fused [wq; wk; wv] and [w1; w3] calls) with an fp32
CPU input, no gradient to record and at least `min_rows` rows to the packed op. MKL packs for a row
count: a weight is packed at its first call with a new count and the packing is kept for the next
calls with that count, up to ROW_COUNTS_KEPT counts per weight (a list of differently sized videos
runs each size's rows through the same weights; a new image size or Lumina-Video's next patch size
adds a count), the least recently used dropped beyond that. The steps of a sampling run reuse the
packings of its first step. Every other call (another device or dtype, training, a small GEMM) runs
exactly as before.

The packed copy is found again by the weight tensor (a weak reference: it leaves with the weight)
and its data pointer, shape, stride and version: an in-place change (a LoRA patch, `copy_`) or new
data (`.to()` and back, a replaced Parameter) repacks at the next call. Inference tensors have no
version counter: a change to one made in place inside `torch.inference_mode` is not seen.

Compiled blocks (`compile_model(model, prepack=True)`) get the same GEMMs another way: a function
mode is not traced into a graph, so `packing_backend` rewrites each fp32 CPU `linear` of the traced
block into the custom op `lumina::packed_linear` (opaque to inductor, which fuses everything
around it) before inductor compiles the graph. That op has no model to hold its packings: they
live in one process-wide PackedWeights (`compiled_packed_bytes()`), each leaving with its weight.

Cost: MKL's packed buffers are 1.5-5x the weight's size (1371 MiB beside the audio DiT's 755 MiB
of parameters at 624 rows), held as long as the clone: an opt-in for CPUs with memory to spare. Outputs differ
from the plain ones by float rounding (another summation order: ~1e-6 relative,
tests/lumina/test_prepack.py). Nothing is set on the model passed in; parameters, buffers and
state-dict keys are shared with it.
"""

from __future__ import annotations

import copy
import weakref
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .errors import LuminaError, LuminaInputError

ModelT = TypeVar("ModelT", bound=nn.Module)

DEFAULT_MIN_ROWS = 16  # below this a GEMM reads its weight once and packing gains nothing (it costs at 2 rows)
ROW_COUNTS_KEPT = 4  # packings per weight: one per row count in use (each costs MKL's packed size again)


def prepack_available() -> bool:
    """Whether this torch build has MKL's packed GEMM (x86 builds with MKL; not ARM, not macOS)."""
    return bool(torch.backends.mkl.is_available()) and hasattr(torch.ops.mkl, "_mkl_linear")


def _version(weight: Tensor) -> int:
    try:
        return weight._version
    except RuntimeError:  # an inference tensor: no version counter (see the module's docstring)
        return -1


class PackedWeights:
    """The clone's packed weights: id(base tensor) → (weak reference to it, {view: (state, {rows: packed})}).
    Keyed by id because tensors compare elementwise (no WeakKeyDictionary); an entry leaves with its
    tensor."""

    def __init__(self) -> None:
        self._by_base: dict[int, tuple[weakref.ref, dict[tuple, tuple[tuple, dict[int, Tensor]]]]] = {}
        self.packs = 0  # how many times a weight was packed (tests read it)

    def _drop(self, key: int) -> None:
        self._by_base.pop(key, None)

    def packed(self, weight: Tensor, rows: int) -> Tensor:
        """`weight` packed for `rows` rows, packed now if it was not (or was changed since)."""
        base = weight._base if weight._base is not None else weight
        slot = self._by_base.get(id(base))
        if slot is None or slot[0]() is not base:
            slot = self._by_base[id(base)] = (weakref.ref(base, lambda _, key=id(base): self._drop(key)), {})
        views = slot[1]
        view = (weight.storage_offset(), tuple(weight.shape), weight.stride())
        state = (weight.data_ptr(), _version(weight))
        if view not in views or views[view][0] != state:
            views[view] = (state, {})
        by_rows = views[view][1]
        packed = by_rows.pop(rows, None)  # re-inserted last: the dict's order is least recently used first
        if packed is None:
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.contiguous(), rows)
            self.packs += 1
            while len(by_rows) >= ROW_COUNTS_KEPT:
                del by_rows[next(iter(by_rows))]
        by_rows[rows] = packed
        return packed

    def nbytes(self) -> int:
        """Bytes held by the packed weights."""
        return sum(packed.numel() * packed.element_size()
                   for _, views in self._by_base.values() for _, by_rows in views.values() for packed in by_rows.values())


def _rows(x: Tensor) -> int:
    """The GEMM's row count: every leading dimension of the input flattened."""
    return x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0


def _packed_gemm(cache: PackedWeights, x: Tensor, weight: Tensor, bias: Tensor | None, rows: int) -> Tensor:
    """F.linear(x, weight, bias) on `weight` packed for `rows` rows (the packing found in `cache`)."""
    return torch.ops.mkl._mkl_linear(x, cache.packed(weight, rows), weight.contiguous(), bias, rows)


class _PackedLinears(TorchFunctionMode):
    def __init__(self, cache: PackedWeights, min_rows: int) -> None:
        super().__init__()
        self.cache, self.min_rows = cache, min_rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rows = _rows(x)
            if (rows >= self.min_rows and x.device.type == "cpu" and weight.device.type == "cpu"
                    and x.dtype == weight.dtype == torch.float32 and weight.dim() == 2
                    and (bias is None or bias.dtype == torch.float32)
                    and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
                return _packed_gemm(self.cache, x, weight, bias, rows)
        return func(*args, **kwargs)


# -- compiled blocks: the packed GEMM as a custom op -----------------------------------------------
PACKED_LINEAR = "lumina::packed_linear"
_COMPILED_PACKS = PackedWeights()  # the packings of compiled blocks' weights (see the module's docstring)


def _packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    rows = _rows(x)
    return F.linear(x, weight, bias) if rows < DEFAULT_MIN_ROWS else _packed_gemm(_COMPILED_PACKS, x, weight, bias, rows)


def packed_linear_op():
    """torch.ops.lumina.packed_linear.default, registered at the first call (once per process: when
    ComfyUI imports this package a second time under its own name, the first registration serves)."""
    namespace = torch.ops.lumina
    if not hasattr(namespace, "packed_linear"):
        try:
            op = torch.library.custom_op(PACKED_LINEAR, _packed_linear, mutates_args=(),
                                         schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
            op.register_fake(lambda x, weight, bias: x.new_empty(*x.shape[:-1], weight.shape[0]))
        except RuntimeError:  # registered meanwhile by the other import of this package
            pass
    return torch.ops.lumina.packed_linear.default


def compiled_packed_bytes() -> int:
    """Bytes held by the packings of compiled blocks' weights in this process (`compile_model(prepack=True)`)."""
    return _COMPILED_PACKS.nbytes()


def rewrite_linears(graph_module: torch.fx.GraphModule) -> int:
    """Point every fp32 CPU `linear` of a traced graph at the packed op (what the traced example
    values say: device, dtype, a 2-D weight); the count rewritten. Graphs traced with gradients on
    are left alone: the op has no backward (training keeps inductor's own GEMMs)."""
    if torch.is_grad_enabled():
        return 0
    op, count = packed_linear_op(), 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in (torch._C._nn.linear, F.linear):
            continue
        args = list(node.args) + [None] * (3 - len(node.args))
        bias = node.kwargs.get("bias", args[2])
        values = [getattr(a, "meta", {}).get("example_value") for a in (args[0], args[1], bias)]
        x, weight, b = values
        if (x is None or weight is None or (bias is not None and b is None) or weight.dim() != 2
                or any(v is not None and (v.device.type != "cpu" or v.dtype != torch.float32) for v in values)):
            continue
        node.target, node.args, node.kwargs = op, (args[0], args[1], bias), {}
        count += 1
    graph_module.recompile()
    return count


def packing_backend(backend: str, mode: str, dynamic: bool | None):
    """A torch.compile backend: `rewrite_linears`, then `backend` (inductor with `mode`'s options)."""

    def compile_graph(graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        rewrite_linears(graph_module)
        if backend == "inductor":
            from torch._inductor import list_mode_options
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(graph_module, example_inputs, config_patches=list_mode_options(mode, dynamic))
        return torch._dynamo.lookup_backend(backend)(graph_module, example_inputs)

    return compile_graph


def is_prepacked(model: nn.Module) -> bool:
    """Whether `model` came from `prepack_model` (by attribute: ComfyUI imports this package twice)."""
    return type(getattr(model, "_lumina_prepacked", None)).__name__ == PackedWeights.__name__


def prepacked_bytes(model: nn.Module) -> int:
    """Bytes the packed weights of a `prepack_model` result hold now (0 before its first call)."""
    if not is_prepacked(model):
        raise LuminaInputError("this model was not made by lumina.prepack_model")
    return model._lumina_prepacked.nbytes()


def prepack_model(model: ModelT, *, min_rows: int = DEFAULT_MIN_ROWS) -> ModelT:
    """A clone of `model` (sharing every submodule and weight) whose fp32 CPU linears run on
    MKL-packed weights, packed at their first call (see the module's docstring); other devices,
    dtypes, gradient-recording calls and GEMMs of fewer than `min_rows` rows run as before.
    For compiled blocks with packed weights use `compile_model(model, prepack=True)` instead."""
    if not isinstance(model, nn.Module):
        raise LuminaInputError(f"prepack_model needs a torch module (a Lumina model), got {type(model).__name__}")
    if is_prepacked(model):
        raise LuminaInputError("this model is prepacked already (lumina.prepack_model); pass the original model")
    if getattr(model, "_lumina_compile", None) is not None:  # lumina.compile_model's mark (compile imports this module)
        raise LuminaInputError("prepack_model does not take a compiled model: compile_model(model, prepack=True) "
                               "gives compiled blocks with packed weights")
    if not isinstance(min_rows, int) or min_rows < 1:
        raise LuminaInputError(f"min_rows={min_rows!r} must be a positive integer")
    if not prepack_available():
        raise LuminaError("this torch build has no MKL packed GEMM (torch.ops.mkl._mkl_linear): prepacked weights need "
                          "an x86 CPU build of torch with MKL; run the model without prepacking")
    clone = copy.copy(model)  # its own __dict__; _parameters / _modules / _buffers shared with `model`
    clone.__class__ = _prepacked_class(type(model))
    clone._lumina_prepacked = PackedWeights()
    clone._lumina_prepack_min_rows = min_rows
    return clone


_PREPACKED_CLASSES: dict[type, type] = {}  # model class → its Prepacked<Model> subclass


def _prepacked_class(plain_class: type) -> type:
    if plain_class not in _PREPACKED_CLASSES:
        plain_forward = plain_class.forward

        def forward(self, *args, **kwargs):
            with _PackedLinears(self._lumina_prepacked, self._lumina_prepack_min_rows):
                return plain_forward(self, *args, **kwargs)

        forward.__doc__ = f"{plain_class.__name__}.forward with MKL-packed fp32 CPU linears (lumina.prepack)."
        _PREPACKED_CLASSES[plain_class] = type(f"Prepacked{plain_class.__name__}", (plain_class,), {"forward": forward})
    return _PREPACKED_CLASSES[plain_class]


__all__ = ["prepack_model", "prepack_available", "is_prepacked", "prepacked_bytes", "PackedWeights", "DEFAULT_MIN_ROWS",
           "ROW_COUNTS_KEPT", "packing_backend", "rewrite_linears", "compiled_packed_bytes", "packed_linear_op"]
