"""How the training run is spread over processes: the accelerate Accelerator for a config.

`python -m train fit` on one CPU, under `accelerate launch` (DDP or FSDP) or `torchrun` all build it
here, so the engine never asks which kind of run it is in (except for the few FSDP-only steps
below: the EMA copy sharded like the model, and full weights gathered for sampling).

FSDP (`run.distributed: fsdp`, or `auto` under an accelerate FSDP config) is the official setup
(lumina_next_t2i/train.py): FULL_SHARD, one FSDP unit per transformer block (NextDiTBlock /
FlagDiTBlock; the embedders and the final layer go to the root unit), parameters computed in bf16
with gradients reduced in fp32 under `run.mixed_precision: bf16`. `use_orig_params=True` lets one
unit mix frozen and trainable tensors (LoRA), and checkpoints are saved as full state dicts
gathered on the main process, so they load with `lumina.load_model` like any other.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig

OFFLOAD = torch.cuda.is_available()  # gathered state dicts go to host memory (they are there already on CPUs)


def block_classes() -> set[type[torch.nn.Module]]:
    """The transformer block classes: each instance becomes one FSDP unit."""
    from lumina.model.flag_dit import FlagDiTBlock
    from lumina.model.next_dit import NextDiTBlock

    return {NextDiTBlock, FlagDiTBlock}


def uses_fsdp(config: TrainConfig) -> bool:
    """run.distributed=fsdp, or auto when the launcher's accelerate config asks for FSDP."""
    mode = config.run.distributed
    if mode == "auto":
        return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return mode == "fsdp"


def wrap_policy():
    """transformer_auto_wrap_policy on the block classes (a callable, so it needs no class names)."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    return functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=block_classes())


def fsdp_plugin(config: TrainConfig):
    """accelerate's FullyShardedDataParallelPlugin for this run.

    The sharding strategy comes from an accelerate FSDP config when there is one (FSDP_SHARDING_STRATEGY)
    and is FULL_SHARD otherwise. sync_module_states (rank 0's initial weights broadcast to all) is on
    with accelerators; torch refuses it for CPU modules, where every rank builds the same weights from
    run.seed (or model.init_from) anyway."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecision

    mixed = None
    if config.run.mixed_precision == "bf16":  # the official: params bf16 in compute, gradients reduced in fp32
        mixed = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
    return FullyShardedDataParallelPlugin(
        fsdp_version=1,
        auto_wrap_policy=wrap_policy(),
        use_orig_params=True,
        sync_module_states=torch.cuda.is_available(),
        cpu_ram_efficient_loading=False,  # (a transformers loading mode; accelerate launch turns it on, forcing sync_module_states)
        # state/ (resuming) holds each process's shards (torch.distributed.checkpoint): nothing is
        # gathered for it, and accelerate's full-state save offloads to the CPU, which crashes CPU
        # processes (see gathered); checkpoints/ get full weights from `gathered`
        state_dict_type="SHARDED_STATE_DICT",
        mixed_precision_policy=mixed,
        activation_checkpointing=False,  # run.gradient_checkpointing checkpoints each block itself
    )


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    fsdp = uses_fsdp(config)
    plugin = fsdp_plugin(config) if fsdp else None
    if config.run.distributed == "ddp":  # an FSDP accelerate config must not turn this run into FSDP
        os.environ["ACCELERATE_USE_FSDP"] = "false"
    accelerator = Accelerator(
        mixed_precision=config.run.mixed_precision, cpu=not torch.cuda.is_available(),
        log_with="tensorboard" if config.run.tensorboard else None, project_dir=str(Path(config.run.out_dir)),
        fsdp_plugin=plugin,
        # DDP: the [PAD] token gets no gradient in a step without padded items (equal sizes)
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate routes only accelerator processes to FSDP (its MULTI_CPU runs become DDP), but
        # torch's FSDP runs on CPUs over gloo: CPU runs (the tests) take the same FSDP path as GPUs.
        # Both shared states are set, as accelerate does for FSDP (AcceleratorState copies PartialState
        # whenever it is built again); FSDP's CPU compute device is "cpu" (it refuses "cpu:0").
        from accelerate.state import PartialState

        for shared in (PartialState._shared_state, accelerator.state.__dict__):
            shared["distributed_type"], shared["device"] = DistributedType.FSDP, torch.device("cpu")
        accelerator.state.fsdp_plugin = plugin
    if fsdp and accelerator.distributed_type != DistributedType.FSDP:
        raise ConfigError(
            "run.distributed=fsdp needs processes started by a launcher (`accelerate launch --use_fsdp`, "
            "`accelerate launch --multi_gpu`, or `torchrun`; one process is fine); this is a plain single-process run"
        )
    if fsdp:
        check_fsdp(config, accelerator.num_processes, plugin.sharding_strategy)
    return accelerator


def check_fsdp(config: TrainConfig, world_size: int, strategy) -> None:
    """Refuse what torch's FSDP (1, use_orig_params) gets wrong: a unit whose tensors are all frozen
    (the root unit of a LoRA run: embedders, final layer, [PAD]) is left holding plain tensors after
    the step unless it is resharded, and its state dict then lacks them ("FSDP assumes pad_token is in
    the state_dict ..."). Unsharded units: NO_SHARD, HYBRID_SHARD, and any strategy on one process."""
    from torch.distributed.fsdp import ShardingStrategy

    if config.model.lora_rank > 0 and (world_size == 1 or strategy not in (ShardingStrategy.FULL_SHARD, ShardingStrategy.SHARD_GRAD_OP)):
        raise ConfigError(
            f"model.lora_rank={config.model.lora_rank} with run.distributed=fsdp needs 2 or more processes and the "
            f"FULL_SHARD or SHARD_GRAD_OP strategy (here {world_size} process(es), {strategy.name}): torch's FSDP loses "
            "the frozen embedders' weights from the state dict otherwise; use run.distributed=ddp"
        )


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def fsdp_units(model: torch.nn.Module) -> list[str]:
    """Names of the FSDP units in a prepared model ("" for the root)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return [name.replace("_fsdp_wrapped_module.", "").removesuffix("._fsdp_wrapped_module")
            for name, module in model.named_modules() if isinstance(module, FSDP)]


def prepare_ema(accelerator, ema: torch.nn.Module | None) -> torch.nn.Module | None:
    """Under FSDP the EMA copy is sharded exactly like the model (as the official code does), so each
    rank updates its own shard; accelerate then saves and restores it with the model state."""
    if ema is None:
        return None
    if not is_fsdp(accelerator):
        return ema.to(accelerator.device)  # beside the model it follows (the GPU in a GPU run)
    return accelerator.prepare_model(ema)


def gathered(accelerator, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict (official names, plus peft's for LoRA) on the main process: under FSDP a
    collective every process must call (the others get {}); otherwise the module's own.

    Not accelerator.get_state_dict: it always asks FSDP to offload to the CPU, and with CPU
    processes (torch 2.13, gloo) FSDP's FULL_STATE_DICT with offload_to_cpu=True dies of SIGSEGV."""
    if not is_fsdp(accelerator):
        return accelerator.get_state_dict(module)
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=OFFLOAD, rank0_only=True)):
        return module.state_dict()


def before_load_state(accelerator) -> None:
    """Under FSDP, give every optimizer its state tensors before `accelerator.load_state`.

    accelerate reads a sharded optimizer checkpoint into the layout of `FSDP.optim_state_dict` of
    the live optimizer; a fresh one has no state yet, so nothing would be read and the resumed run
    would restart Adam's moments. One step with zero gradients at lr 0 creates them without
    changing any weight; load_state then overwrites them (and the step counts)."""
    if not is_fsdp(accelerator):
        return
    for optimizer in accelerator._optimizers:
        lrs = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = 0.0
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
