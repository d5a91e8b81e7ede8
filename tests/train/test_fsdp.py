"""Distributed training on CPU processes (gloo): FSDP with one unit per transformer block, and DDP.

accelerate (1.15) sends only accelerator processes to FSDP, so train/distributed.py moves CPU runs
onto torch's FSDP itself; these tests run the very code path GPU runs take (FULL_SHARD,
use_orig_params, sharded EMA, sharded resumable state, full checkpoints gathered on rank 0),
except sync_module_states and NCCL (benchmarks/fsdp_smoke.py checks those on a GPU).
Tolerance: 2 processes vs 1 differ only by the order of fp32 sums (observed ≤ 5e-7; asserted 1e-5).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import TINY
from safetensors.torch import load_file

import lumina
from train.config import load_config
from train.distributed import block_classes, fsdp_plugin, uses_fsdp, wrap_policy
from train.engine import fit

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
UNITS = "FSDP units (root ''): ['', 'layers.0', 'layers.1']"


def args(encoder: str, out: Path, steps: int, *extra: str) -> list[str]:
    return [*TINY, f"text.encoder={encoder}", f"run.out_dir={out}", f"optim.steps={steps}", f"run.save_every={steps}", *extra]


def launch(launcher: list[str], fit_args: list[str], program: list[str] = ("-m", "train"), expect_success: bool = True) -> str:
    """Run `python -m train fit` (or `program`) under a launcher with 2 CPU processes; returns its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", *launcher, *program, "fit", *fit_args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert (done.returncode == 0) == expect_success, done.stderr[-4000:]
    return done.stderr


TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worst(a: Path, b: Path) -> float:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


MODEL, EMA = "consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors"


@pytest.fixture(scope="module")
def single(encoder, tmp_path_factory) -> Path:
    """The reference: 6 steps in this process, no launcher."""
    return fit(load_config(None, args(encoder, tmp_path_factory.mktemp("single") / "run", 6)))


# -- the wrapping policy --------------------------------------------------------------------
@pytest.mark.parametrize("family", ["next_dit", "flag_dit"])
def test_wrap_policy_makes_one_unit_per_block(family):
    from train.lora import add_lora

    config = lumina.LuminaConfig(family, dim=32, n_layers=3, n_heads=2, n_kv_heads=1 if family == "next_dit" else None,
                                 cap_feat_dim=32, multiple_of=16, patch_size=2, in_channels=4)
    policy = wrap_policy()
    for model in (lumina.build_model(config), add_lora(lumina.build_model(config), 4)):
        chosen = [name for name, module in model.named_modules() if policy(module=module, recurse=False, nonwrapped_numel=0)]
        assert chosen == ["layers.0", "layers.1", "layers.2"]  # the rest (embedders, final layer) is the root unit
        assert {type(model.layers[0])} <= block_classes()


def test_fsdp_plugin_is_the_official_setup(encoder, monkeypatch):
    from torch.distributed.fsdp import ShardingStrategy, StateDictType

    monkeypatch.delenv("FSDP_SHARDING_STRATEGY", raising=False)
    config = load_config(None, [*TINY, f"text.encoder={encoder}", "run.distributed=fsdp", "run.mixed_precision=bf16"])
    plugin = fsdp_plugin(config)
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD and plugin.fsdp_version == 1
    assert plugin.use_orig_params is True  # LoRA: frozen and trainable tensors in one unit
    assert plugin.sync_module_states is torch.cuda.is_available()  # torch refuses it for CPU modules
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    mixed = plugin.mixed_precision_policy
    assert (mixed.param_dtype, mixed.reduce_dtype) == (torch.bfloat16, torch.float32)  # the official bf16 / fp32
    assert fsdp_plugin(load_config(None, [*TINY, f"text.encoder={encoder}"])).mixed_precision_policy is None

    auto = load_config(None, [*TINY, f"text.encoder={encoder}"])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    assert uses_fsdp(auto) and not uses_fsdp(load_config(None, [*TINY, f"text.encoder={encoder}", "run.distributed=ddp"]))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert not uses_fsdp(auto)


def test_bad_distributed_settings_fail_clearly(encoder, tmp_path):
    from train.config import ConfigError

    with pytest.raises(ConfigError, match="run.distributed='zero3': choose auto, ddp or fsdp"):
        load_config(None, [*TINY, f"text.encoder={encoder}", "run.distributed=zero3"])
    done = subprocess.run([sys.executable, "-m", "train", "fit", *args(encoder, tmp_path / "run", 1, "run.distributed=fsdp")],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "run.distributed=fsdp needs processes started by a launcher" in done.stderr
    assert not (tmp_path / "run" / "log.jsonl").exists()


# -- real runs ------------------------------------------------------------------------------
FSDP = ["run.distributed=fsdp", "run.sample_every=3", "run.sample_prompts=[a small red circle]"]


@pytest.fixture(scope="module")
def fsdp_three(encoder, tmp_path_factory) -> tuple[Path, str]:
    """2 gloo processes under FSDP, stopped after 3 steps: (run folder, stderr)."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    return out, launch(TORCHRUN, args(encoder, out, 3, *FSDP))


@pytest.fixture(scope="module")
def fsdp_six(encoder, fsdp_three, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the 3-step FSDP run resumed to 6 steps: (run folder, stderr)."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    shutil.copytree(fsdp_three[0], out)
    return out, launch(TORCHRUN, args(encoder, out, 6, *FSDP))


def test_fsdp_two_processes_agree_with_one_and_resume(encoder, single, fsdp_three, fsdp_six):
    """2 gloo processes under FSDP, stopped after 3 steps and resumed to 6 (sharded model, EMA and
    Adam state), give the single-process weights; the gathered checkpoints load with lumina."""
    (_, first), (out, second) = fsdp_three, fsdp_six
    assert UNITS in first
    assert "resumed from step 3" in second
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert (out / "state" / "pytorch_model_fsdp_0").is_dir() and (out / "state" / "pytorch_model_fsdp_1").is_dir()  # model, EMA
    for name in (MODEL, EMA):
        difference = worst(single / "checkpoints" / "latest" / name, out / "checkpoints" / "latest" / name)
        assert difference < TOLERANCE, f"{name}: FSDP weights differ from 1-process by {difference:.2e}"
    model = lumina.load_model(out / "checkpoints" / "latest")
    assert model.config.dim == 32 and model.config.n_layers == 2
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_0000003.png", "step_0000006.png"]
    # the sealed manifest lists every process's files (rank 0 sealed it after all had written and synced)
    manifest = json.loads((out / "state" / "step.json").read_text())
    assert manifest["step"] == 6 and manifest["processes"] == 2
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(manifest["files"])
    for folder in ("pytorch_model_fsdp_0", "pytorch_model_fsdp_1", "optimizer_0"):
        assert len([n for n in manifest["files"] if n.startswith(folder + "/") and n.endswith(".distcp")]) == 2, folder
    assert not [p.name for p in (out, out / "checkpoints") for p in p.iterdir() if p.name.endswith((".tmp", ".old"))]


KILL_RANK_1 = """
import os, signal, sys
from pathlib import Path
import torch
target, nth = sys.argv.pop(1), int(sys.argv.pop(1))
seen, save = [0], torch.save
def save_then_die(obj, f, *args, **kwargs):
    save(obj, f, *args, **kwargs)
    if isinstance(f, (str, os.PathLike)) and Path(f).name == target:
        seen[0] += 1
        if seen[0] == nth:  # rank 1 half way through this file: cut it, and SIGKILL the process
            os.truncate(f, os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return None
torch.save = save_then_die
from train.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_fsdp_killed_in_a_save_resumes_exactly(encoder, fsdp_three, fsdp_six, tmp_path):
    """Rank 1 SIGKILLed while writing its random_states_1.pkl of the save at step 5 (the launcher
    then stops rank 0 wherever it is): the state of step 4 stays complete, and resuming to 6 gives
    the uninterrupted FSDP run's weights bit for bit."""
    out = tmp_path / "run"
    shutil.copytree(fsdp_three[0], out)
    driver = tmp_path / "kill_rank_1.py"
    driver.write_text(KILL_RANK_1)
    every_step = args(encoder, out, 6, *FSDP, "run.save_every=1")  # saves at steps 4, 5 and 6
    launch(TORCHRUN, every_step, program=[str(driver), "random_states_1.pkl", "2"], expect_success=False)
    assert json.loads((out / "state" / "step.json").read_text())["step"] == 4
    assert (out / "state.tmp").is_dir()  # the unsealed save of step 5
    second = launch(TORCHRUN, every_step)
    assert "resumed from step 4" in second
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    for name in (MODEL, EMA):
        want = load_file(fsdp_six[0] / "checkpoints" / "latest" / name)
        got = load_file(out / "checkpoints" / "latest" / name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name
    assert not (out / "state.tmp").exists()


def test_fsdp_lora_under_accelerate_launch_agrees_with_one_process(encoder, single, tmp_path):
    """`accelerate launch --use_fsdp` with run.distributed=auto: LoRA adapters in FSDP units that mix
    frozen and trainable tensors (use_orig_params), exported from the gathered state dict."""
    base = single / "checkpoints" / "latest" / MODEL
    lora = ["model.init_from=" + str(base), "model.lora_rank=4", "run.ema_decay=0"]  # EMA of adapters: not under FSDP
    one = fit(load_config(None, args(encoder, tmp_path / "one", 4, *lora)))
    launcher = ["accelerate.commands.launch", "--use_fsdp", "--num_processes", "2", "--num_machines", "1",
                "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    log = launch(launcher, args(encoder, tmp_path / "fsdp", 4, *lora))
    assert UNITS in log
    for name in ("lora.safetensors", MODEL):
        difference = worst(one / "checkpoints" / "latest" / name, tmp_path / "fsdp" / "checkpoints" / "latest" / name)
        assert difference < TOLERANCE, f"{name}: FSDP LoRA differs from 1-process by {difference:.2e}"


def test_ddp_two_processes_agree_with_one(encoder, single, tmp_path):
    """Real DDP (torchrun, 2 gloo processes). `accelerate launch --cpu --num_processes 2` starts ONE
    process (accelerate's simple launcher), so it does not test this."""
    log = launch(TORCHRUN, args(encoder, tmp_path / "ddp", 6, "run.distributed=ddp"))
    assert "FSDP units" not in log and "training on 2 processes on cpu (DDP, MULTI_CPU), this is rank 1" in log
    for name in (MODEL, EMA):
        difference = worst(single / "checkpoints" / "latest" / name, tmp_path / "ddp" / "checkpoints" / "latest" / name)
        assert difference < TOLERANCE, f"{name}: DDP weights differ from 1-process by {difference:.2e}"


def test_lora_on_unsharded_fsdp_is_refused(encoder):
    """torch's FSDP loses an all-frozen unit's weights from the state dict unless the unit is
    resharded (one process, NO_SHARD, HYBRID_SHARD): a LoRA run's root unit is all frozen."""
    from torch.distributed.fsdp import ShardingStrategy

    from train.config import ConfigError
    from train.distributed import check_fsdp

    lora = load_config(None, [*TINY, f"text.encoder={encoder}", "run.distributed=fsdp", "model.lora_rank=4"])
    full = load_config(None, [*TINY, f"text.encoder={encoder}", "run.distributed=fsdp"])
    check_fsdp(lora, 2, ShardingStrategy.FULL_SHARD)
    check_fsdp(lora, 8, ShardingStrategy.SHARD_GRAD_OP)
    check_fsdp(full, 1, ShardingStrategy.FULL_SHARD)  # full training: every unit has gradients
    for world, strategy in ((1, ShardingStrategy.FULL_SHARD), (2, ShardingStrategy.NO_SHARD), (4, ShardingStrategy.HYBRID_SHARD)):
        with pytest.raises(ConfigError, match=f"needs 2 or more processes .* \\(here {world} process\\(es\\), {strategy.name}\\)"):
            check_fsdp(lora, world, strategy)
