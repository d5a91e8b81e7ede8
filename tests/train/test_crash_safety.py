"""Kill-and-resume: a training run killed at any moment of a save resumes bit-identically to an
uninterrupted run, or refuses with a message naming the damaged file (train/checkpointing.py).

The kills are simulated exactly: during one uninterrupted run every file-system change a save makes
(each file accelerate, safetensors, torch and train/ write, each rename and removal) first copies
the run folder as it is at that moment, and for a file write also as it is mid-write (the new file
half written). Each copy is then resumed to the end in this process and compared with the
uninterrupted run: every tensor of state/ and checkpoints/latest/, optimizer.bin byte for byte, both
manifests' steps and the log. Two real SIGKILLs of `python -m train fit` (one inside the
optimizer.bin write, one at whatever moment a save is under way) complete the picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import accelerate.utils.other
import pytest
import torch
from builders import TINY, write_images
from safetensors import safe_open

import lumina.checkpoints
from train import checkpointing, engine
from train.__main__ import main
from train.checkpointing import CheckpointError, trim_log
from train.config import load_config
from train.engine import fit

REPO = Path(__file__).resolve().parents[2]
STEPS = 2  # a first save (nothing to fall back on) and a final one (replacing the first, then done)


def fit_args(encoder: str, out: Path, steps: int = STEPS, *extra: str) -> list[str]:
    return [*TINY, f"text.encoder={encoder}", f"run.out_dir={out}", f"optim.steps={steps}", "run.save_every=1",
            "run.progress=false", *extra]


def train_run(encoder: str, out: Path, steps: int = STEPS, *extra: str) -> Path:
    return fit(load_config(None, fit_args(encoder, out, steps, *extra)))


# -- what a finished run leaves ---------------------------------------------------------------
LEFTOVER_SUFFIXES = (".tmp", ".old", ".damaged")


def fingerprint(out: Path) -> dict:
    """Everything a finished run leaves that must not depend on how often it was killed."""
    result: dict = {}
    for folder in ("state", "checkpoints/latest"):
        root = out / folder
        assert root.is_dir(), f"{root} is missing"
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = f"{folder}/{path.relative_to(root).as_posix()}"
            if path.name == "step.json":
                manifest = json.loads(path.read_text())
                result[name] = (manifest["step"], sorted(manifest["files"]))
            elif path.name.startswith("random_states"):
                result[name] = "present"  # Python's and NumPy's generator states (unused) differ between processes
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    result[name] = (f.metadata(), {k: f.get_tensor(k) for k in f.keys()})
            else:
                result[name] = path.read_bytes()  # optimizer.bin: torch.save is deterministic
    result["log"] = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                     for line in (out / "log.jsonl").read_text().splitlines()]
    return result


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for folder in (out, out / "checkpoints") if folder.is_dir() for p in folder.iterdir()
                  if p.name.endswith(LEFTOVER_SUFFIXES))


def assert_same(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), f"{where}: files {sorted(got)} != {sorted(want)}"
    for name, value in want.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):  # safetensors
            metadata, tensors = got[name]
            assert metadata == value[0] and tensors.keys() == value[1].keys(), f"{where}: {name}"
            for key, tensor in value[1].items():
                assert tensors[key].dtype == tensor.dtype and torch.equal(tensors[key], tensor), f"{where}: {name} {key}"
        else:
            assert got[name] == value, f"{where}: {name} differs"


# -- the simulated kills ----------------------------------------------------------------------
class Recorder:
    """Wraps the writers a save goes through; before each call (and, for file writes, right after
    it with the new file cut to half its size) copies the run folder: the folder a kill at that
    moment leaves. Copies identical to an earlier one are dropped."""

    def __init__(self, out: Path, into: Path) -> None:
        self.out, self.into = out, into
        self.kills: list[tuple[str, Path]] = []
        self.events: list[str] = []
        self.seen: set[str] = set()

    def _relative(self, target) -> str | None:
        try:
            return Path(target).resolve().relative_to(self.out.resolve()).as_posix()
        except (TypeError, ValueError):  # a stream, or a file outside the run
            return None

    def snapshot(self, label: str, partial: str | None = None) -> None:
        if not self.out.exists():
            return
        copy = self.into / f"{len(self.kills):03d}"
        shutil.copytree(self.out, copy)
        if partial is not None:
            path = copy / partial
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        signature = hashlib.sha256()
        for path in sorted(p for p in copy.rglob("*") if p.is_file() and p.name != "config.yaml"):
            signature.update(path.relative_to(copy).as_posix().encode() + b"\0" + path.read_bytes())
        if signature.hexdigest() in self.seen:
            shutil.rmtree(copy)
            return
        self.seen.add(signature.hexdigest())
        self.kills.append((label, copy))

    def writer(self, write, target_arg: int):
        """A file writer (the file is argument `target_arg`)."""
        def wrapped(*args, **kwargs):
            name = self._relative(args[target_arg])
            if name is None:
                return write(*args, **kwargs)
            self.events.append(f"write {name}")
            self.snapshot(f"before writing {name}")
            result = write(*args, **kwargs)
            self.snapshot(f"while writing {name}", partial=name)
            return result
        return wrapped

    def operation(self, operate, verb: str):
        """A rename or removal (the paths are the arguments)."""
        def wrapped(*args):
            names = [self._relative(a) for a in args]
            self.events.append(f"{verb} {' -> '.join(str(n) for n in names)}")
            self.snapshot(f"before {verb} {' -> '.join(str(n) for n in names)}")
            return operate(*args)
        return wrapped

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch, "save", self.writer(torch.save, 1))  # optimizer.bin, random_states_*.pkl
        monkeypatch.setattr(accelerate.utils.other, "safe_save_file", self.writer(accelerate.utils.other.safe_save_file, 1))
        monkeypatch.setattr(engine, "save_file", self.writer(engine.save_file, 1))  # ema.safetensors
        monkeypatch.setattr(lumina.checkpoints, "save_file", self.writer(lumina.checkpoints.save_file, 1))  # latest/
        monkeypatch.setattr(checkpointing, "write_json", self.writer(checkpointing.write_json, 0))
        monkeypatch.setattr(checkpointing, "replace", self.operation(checkpointing.replace, "rename"))
        monkeypatch.setattr(checkpointing, "remove_tree", self.operation(checkpointing.remove_tree, "remove"))


def record(out: Path, into: Path, monkeypatch, run) -> Recorder:
    recorder = Recorder(out, into)
    into.mkdir()
    with monkeypatch.context() as patch:
        recorder.install(patch)
        run()
    return recorder


def resume_each(encoder: str, recorder: Recorder, reference: dict) -> None:
    for label, copy in recorder.kills:
        train_run(encoder, copy)
        assert_same(fingerprint(copy), reference, f"killed {label}")
        assert not leftovers(copy), f"killed {label}: {leftovers(copy)} left behind"


@pytest.fixture(scope="module")
def uninterrupted(encoder, tmp_path_factory) -> Path:
    return train_run(encoder, tmp_path_factory.mktemp("straight") / "run")


def test_a_kill_at_any_write_of_any_save_resumes_bit_identically(encoder, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recorder = record(out, tmp_path / "kills", monkeypatch, lambda: train_run(encoder, out))
    reference = fingerprint(uninterrupted)
    assert_same(fingerprint(out), reference, "the recorded run")
    # every file of both folders was written under the recorder (a writer accelerate stopped using
    # would silently escape the enumeration otherwise), in each of the two saves
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "ema.safetensors", "step.json"):
        assert recorder.events.count(f"write state.tmp/{name}") == STEPS, name
    for name in ("consolidated.00-of-01.safetensors", "consolidated_ema.00-of-01.safetensors", "step.json"):
        assert recorder.events.count(f"write checkpoints/latest.tmp/{name}") == STEPS, name
    assert recorder.events.count("rename state -> state.old") == STEPS - 1
    assert len(recorder.kills) >= 35, [label for label, _ in recorder.kills]
    resume_each(encoder, recorder, reference)


def test_a_kill_while_resuming_an_interrupted_save_is_safe_too(encoder, uninterrupted, tmp_path, monkeypatch):
    """The richest repair: killed between the final save's two renames of state/ (state.old/ and a
    sealed state.tmp/ left, checkpoints/latest/ one step behind). Its resume renames, removes and
    re-exports; a kill at any of those moments resumes exactly as well."""
    out = tmp_path / "run"
    recorder = record(out, tmp_path / "kills", monkeypatch, lambda: train_run(encoder, out))
    label, interrupted = next((label, copy) for label, copy in recorder.kills
                              if label == "before rename state.tmp -> state" and (copy / "state.old").is_dir())
    assert json.loads((interrupted / "checkpoints" / "latest" / "step.json").read_text())["step"] == STEPS - 1
    again = record(interrupted, tmp_path / "kills_in_resume", monkeypatch, lambda: train_run(encoder, interrupted))
    assert any(label.startswith("before rename state.tmp -> state") for label, _ in again.kills)
    assert any("checkpoints/latest.tmp/" in label for label, _ in again.kills)  # the re-export
    reference = fingerprint(uninterrupted)
    assert_same(fingerprint(interrupted), reference, label)
    resume_each(encoder, again, reference)


# -- real kills -------------------------------------------------------------------------------
KILL_INSIDE = """
import os, signal, sys
from pathlib import Path
import torch
target, nth = sys.argv[1], int(sys.argv[2])
seen, save = [0], torch.save
def save_then_die(obj, f, *args, **kwargs):
    save(obj, f, *args, **kwargs)
    if isinstance(f, (str, os.PathLike)) and Path(f).name == target:
        seen[0] += 1
        if seen[0] == nth:  # the write is half done: cut the file, and SIGKILL this process
            os.truncate(f, os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return None
torch.save = save_then_die
from train.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_sigkill_while_writing_optimizer_bin_resumes_bit_identically(encoder, uninterrupted, tmp_path):
    """The issue's case: killed while optimizer.bin of the second save was being written (before:
    a 0-byte file, and the resume died with a bare EOFError)."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", KILL_INSIDE, "optimizer.bin", "2", "fit", *fit_args(encoder, out)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert json.loads((out / "state" / "step.json").read_text())["step"] == 1
    assert (out / "state.tmp" / "optimizer.bin").is_file()  # the half-written one, in the unsealed staging folder
    train_run(encoder, out)
    assert_same(fingerprint(out), fingerprint(uninterrupted), "SIGKILL in optimizer.bin")
    assert not leftovers(out)


def test_sigkill_at_a_random_moment_of_a_save(encoder, tmp_path):
    """`python -m train fit` saving every step, SIGKILLed as soon as a save is seen under way (its
    staging folder exists) after the first one completed: wherever it landed, the resume is exact."""
    steps = 12
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "train", "fit", *fit_args(encoder, out, steps)], cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "state" / "step.json").is_file() and (out / "state.tmp").is_dir()):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    train_run(encoder, out, steps)
    reference = train_run(encoder, tmp_path / "straight", steps)
    assert_same(fingerprint(out), fingerprint(reference), "SIGKILL during a save")
    assert not leftovers(out)


# -- fall-backs and refusals ------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_state(encoder, tmp_path_factory) -> Path:
    """state/ after one step: the same as the 2-step run's first save (constant learning rate)."""
    return train_run(encoder, tmp_path_factory.mktemp("one") / "run", 1) / "state"


def test_a_damaged_state_falls_back_to_a_complete_older_one_with_a_warning(encoder, uninterrupted, first_state, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    shutil.copytree(first_state, out / "state.old")  # as if state/ was damaged inside a save's swap
    (out / "state" / "optimizer.bin").write_bytes(b"")
    train_run(encoder, out)
    assert "state/optimizer.bin has 0 bytes, but the save of step 2 wrote" in caplog.text
    assert "falling back to the complete checkpoint of step 1" in caplog.text
    assert_same(fingerprint(out), fingerprint(uninterrupted), "fall-back")
    assert leftovers(out) == ["state.damaged"]  # kept for inspection


def test_a_version_1_state_still_resumes_with_a_warning(encoder, uninterrupted, first_state, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(first_state, out / "state")
    shutil.copy(first_state.parent / "log.jsonl", out / "log.jsonl")
    (out / "state" / "step.json").write_text(json.dumps({"step": 1}))  # what earlier versions wrote
    train_run(encoder, out)
    assert "without checksums: it cannot be verified" in caplog.text
    assert_same(fingerprint(out), fingerprint(uninterrupted), "version-1 state")


@pytest.mark.parametrize("cut, message", [
    (0, "cannot resume: {state}/optimizer.bin is empty (0 bytes)"),  # the bare EOFError
    (0.5, "cannot resume from {state} (step 1): "),
])
def test_a_damaged_version_1_state_is_refused_clearly(encoder, first_state, tmp_path, capsys, cut, message):
    out = tmp_path / "run"
    shutil.copytree(first_state, out / "state")
    (out / "state" / "step.json").write_text(json.dumps({"step": 1}))
    optimizer = out / "state" / "optimizer.bin"
    os.truncate(optimizer, int(optimizer.stat().st_size * cut))
    err = _fails(["fit", *fit_args(encoder, out)], capsys)
    assert message.format(state=out / "state") in err
    if cut:
        assert "written by an older version without checksums and may be damaged" in err


def test_trim_log_drops_redone_steps_and_a_half_written_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "loss": 0.8}\n{"step": 4, "lo')
    trim_log(log, 2)
    assert log.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n'


# -- the CLI: one message, exit code 2, no traceback --------------------------------------------
def _fails(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    return err


@pytest.fixture()
def damaged(uninterrupted, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    return out


@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", "truncate", "state/model.safetensors has {half} bytes, but the save of step 2 wrote {size}"),
    ("ema.safetensors", "flip", "state/ema.safetensors does not match the SHA-256 the save of step 2 recorded"),
    ("optimizer.bin", "truncate", "state/optimizer.bin has {half} bytes, but the save of step 2 wrote {size}"),
    ("optimizer.bin", "delete", "state/optimizer.bin is missing (the save of step 2 wrote it)"),
    ("step.json", "empty", "state/step.json is empty"),
])
def test_resume_from_a_damaged_state_names_the_file(encoder, damaged, capsys, name, damage, message):
    path = damaged / "state" / name
    size = path.stat().st_size
    if damage == "truncate":
        os.truncate(path, size // 2)
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"")
    err = _fails(["fit", *fit_args(encoder, damaged, 3)], capsys)
    assert message.format(half=size // 2, size=size) in err
    assert "python -m train fit: error: cannot resume:" in err
    assert "no earlier complete checkpoint to fall back on" in err and "run.resume=false" in err
    assert json.loads((damaged / "log.jsonl").read_text().splitlines()[-1])["step"] == 2  # nothing was trained


def test_resume_from_a_damaged_state_in_a_real_process(encoder, damaged):
    os.truncate(damaged / "state" / "optimizer.bin", 0)
    done = subprocess.run([sys.executable, "-m", "train", "fit", *fit_args(encoder, damaged, 3)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"error: cannot resume: {damaged / 'state' / 'optimizer.bin'} has 0 bytes" in done.stderr


def test_resume_with_another_model_shape_is_refused_clearly(encoder, damaged, capsys):
    err = _fails(["fit", *fit_args(encoder, damaged, 3), "model.n_layers=3"], capsys)
    assert f"cannot resume from {damaged / 'state'} (step 2)" in err and "Use the config it was saved with" in err


def test_malformed_yaml(encoder, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("optim:\n  steps: [1, 2\nrun:\n  seed: 0\n")
    err = _fails(["fit", "--config", str(config), f"text.encoder={encoder}"], capsys)
    assert f"config error: config file {config} is not valid YAML" in err and "line 3" in err
    config.write_text("- a list\n")
    assert "must be a mapping of sections" in _fails(["fit", "--config", str(config)], capsys)
    assert "the value is not valid YAML" in _fails(["fit", *fit_args(encoder, tmp_path / "r"), "run.sample_prompts=[a, b"], capsys)


def test_every_image_corrupt(encoder, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(b"not a png")
        (folder / f"img{i}.txt").write_text("a red circle")
    err = _fails(["fit", *fit_args(encoder, tmp_path / "run"), "data.kind=folder", f"data.path={folder}", "optim.batch_size=2"],
                 capsys)
    assert f"config error: data.path='{folder}': none of its 3 image(s) can be read (e.g. {folder / 'img0.png'}" in err
    assert "replace the corrupt files" in err


def test_every_image_corrupt_for_the_cache(encoder, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "img0.png").write_bytes(b"not a png")
    (folder / "img0.txt").write_text("a red circle")
    err = _fails(["cache", *fit_args(encoder, tmp_path / "run"), "data.kind=folder", f"data.path={folder}",
                  f"data.cache_dir={tmp_path / 'cache'}"], capsys)
    assert f"config error: data.path='{folder}': none of its 1 image(s) can be read; nothing was cached" in err


@pytest.mark.parametrize("kind", ["folder", "jsonl"])
def test_empty_data(encoder, tmp_path, capsys, kind):
    path = tmp_path / "data"
    if kind == "folder":
        path.mkdir()
        (path / "lonely.png").write_bytes(b"")  # an image without a caption does not count
    else:
        path = tmp_path / "data.jsonl"
        path.write_text("\n")
    err = _fails(["fit", *fit_args(encoder, tmp_path / "run"), f"data.kind={kind}", f"data.path={path}"], capsys)
    expected = "holds no image with a same-name .txt caption" if kind == "folder" else "lists no usable image"
    assert f"config error: data.path='{path}' {expected}" in err


def test_init_from_missing_or_truncated(encoder, uninterrupted, tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    err = _fails(["fit", *fit_args(encoder, tmp_path / "a"), f"model.init_from={missing}"], capsys)
    assert f"config error: model.init_from='{missing}' does not exist" in err
    truncated = tmp_path / "cut.safetensors"
    source = uninterrupted / "checkpoints" / "latest" / "consolidated.00-of-01.safetensors"
    truncated.write_bytes(source.read_bytes()[:1000])
    err = _fails(["fit", *fit_args(encoder, tmp_path / "b"), f"model.init_from={truncated}"], capsys)
    assert f"config error: model.init_from='{truncated}' cannot be loaded" in err and "truncated or corrupt" in err


def test_unreadable_images_are_counted_once_each(encoder, tmp_path, caplog):
    """3 corrupt files among 5 good ones, trained for 4 epochs: each is reported and counted once."""
    folder = write_images(tmp_path / "data", [(16, 16)] * 8)
    for i in (1, 4, 6):
        (folder / f"img{i:03d}.png").write_bytes(b"broken")
    train_run(encoder, tmp_path / "run", 8, "data.kind=folder", f"data.path={folder}", "optim.batch_size=4")
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(warnings) == 3 and warnings[-1].endswith("3 of 8 skipped so far")
    assert sorted(w.split()[3] for w in warnings) == sorted(str(folder / f"img{i:03d}.png") for i in (1, 4, 6))


def test_the_checkpoint_error_reaches_the_cli_as_exit_2(capsys, monkeypatch):
    def broken(config):
        raise CheckpointError("cannot resume: x is damaged")

    monkeypatch.setattr(engine, "fit", broken)
    assert main(["fit", *TINY, "text.encoder=" + str(REPO)]) == 2
    assert "python -m train fit: error: cannot resume: x is damaged" in capsys.readouterr().err
