"""Crash-safe checkpoint folders: `state/` (resuming) and `checkpoints/latest/` (exported weights).

A folder is never rewritten in place. A save fills `<name>.tmp/`, fsyncs every file, writes the
manifest `step.json` (the step, and each file's size and SHA-256) last, fsyncs it and the folder,
then swaps: `<name>/` → `<name>.old/`, `<name>.tmp/` → `<name>/`, fsync of the parent, removal of
`<name>.old/`. A kill at any moment therefore leaves one complete, sealed folder under one of the
three names (the previous one is kept until the new one is complete), and `recover` puts the newest
complete one back under `<name>/` before a run resumes. A folder without a readable manifest, or
whose files differ from it in size or checksum, is never used: `recover` falls back to another
complete one with a warning, or raises CheckpointError naming the damaged file.

Every change to the file system goes through `replace`, `remove_tree` and `write_json` (and the
writers accelerate, safetensors and torch use for the files themselves), so that the tests can stop
a save after any one of them and prove the resume exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("train.checkpointing")

MANIFEST = "step.json"
FORMAT = "lumina-train-checkpoint"
VERSION = 2  # version 1: step.json held only {"step": N}, written last into the live folder
STAGING, PREVIOUS, DAMAGED = ".tmp", ".old", ".damaged"


class CheckpointError(Exception):
    """A resumable state that cannot be used: reported with exit code 2, naming the file and the fix."""


# -- the file-system operations (one function each, so the tests can interrupt any of them) ---
def replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_json(path: Path, value: Any) -> None:
    """Write and fsync a small JSON file (inside a staging folder, so no temporary name is needed)."""
    with open(path, "w") as f:
        f.write(json.dumps(value, indent=1))
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, renames) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened, and renames are durable on their own there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder, deepest first: torch.save, safetensors
    and accelerate only close their files, so without this a power loss could leave a sealed
    manifest naming data that never reached the disk."""
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        try:
            if path.is_dir():
                folders.append(path)
            elif path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        except FileNotFoundError:  # another process's temporary file, renamed meanwhile (it syncs its own)
            continue
    for path in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(path)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def listing(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} for every file under `folder` but the manifest."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST:
            files[name] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
    return files


# -- saving ----------------------------------------------------------------------------------
def staging(final: Path) -> Path:
    return final.with_name(final.name + STAGING)


def previous(final: Path) -> Path:
    return final.with_name(final.name + PREVIOUS)


def prepare(final: Path) -> Path:
    """An empty staging folder for the next version of `final` (a stale one from a killed save is
    removed: it was never sealed, or `recover` would have moved it into place)."""
    tmp = staging(final)
    remove_tree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def seal(folder: Path, step: int, **extra: Any) -> dict[str, Any]:
    """Make every file of a filled staging folder durable, then write the manifest that marks it
    complete: nothing reads a folder as a checkpoint before this returns."""
    sync_tree(folder)
    manifest = {"format": FORMAT, "version": VERSION, "step": step, **extra, "files": listing(folder)}
    write_json(folder / MANIFEST, manifest)
    fsync_dir(folder)
    return manifest


def commit(final: Path) -> None:
    """Put the sealed staging folder in place of `final`, keeping the previous version until the
    new one is in place."""
    old = previous(final)
    remove_tree(old)  # a leftover of an interrupted removal; `final` is complete
    if final.exists():
        replace(final, old)
    replace(staging(final), final)
    fsync_dir(final.parent)
    remove_tree(old)


# -- reading back ----------------------------------------------------------------------------
@dataclass
class Inspection:
    """What a checkpoint folder holds: its step, and `problem` (naming the file) unless complete."""

    folder: Path
    step: int | None = None
    problem: str | None = None
    verified: bool = True  # False: a version-1 folder (no file list: only the step can be checked)

    @property
    def complete(self) -> bool:
        return self.problem is None and self.step is not None


def inspect(folder: Path) -> Inspection:
    """Check a folder against its manifest: every listed file present with its size and SHA-256."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return Inspection(folder, problem=f"{manifest_path} is missing (the save never completed)")
    try:
        text = manifest_path.read_text()
        manifest = json.loads(text)
        step = manifest["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step {step!r} is not a step number")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        what = "is empty" if manifest_path.stat().st_size == 0 else f"is unreadable ({type(err).__name__}: {err})"
        return Inspection(folder, problem=f"{manifest_path} {what}")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str) for e in files.values())):
        return Inspection(folder, problem=f"{manifest_path} is unreadable (its file list is malformed)")
    if files is None:  # version 1: only the step was recorded; at least refuse empty files
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.stat().st_size == 0:
                return Inspection(folder, step, f"{path} is empty (0 bytes)", verified=False)
        return Inspection(folder, step, verified=False)
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return Inspection(folder, step, f"{path} is missing (the save of step {step} wrote it)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            return Inspection(folder, step, f"{path} has {size} bytes, but the save of step {step} wrote {expected['bytes']} "
                                            "(truncated or overwritten)")
        if sha256(path) != expected["sha256"]:
            return Inspection(folder, step, f"{path} does not match the SHA-256 the save of step {step} recorded "
                                            "(changed or corrupted since)")
    return Inspection(folder, step)


def recover(final: Path, fix: str = "") -> Inspection | None:
    """Bring the newest complete version among `final`, its staging and its previous folder back
    under `final` and remove the others; None when there is none (start from scratch).

    A damaged `final` (external damage: a committed folder is complete) is moved to
    `<name>.damaged/` with a warning when an older complete version exists, and raises
    CheckpointError otherwise. Safe to interrupt: the chosen folder stays under one of the three
    names until it is under `final`."""
    candidates = [inspect(p) for p in (final, staging(final), previous(final)) if p.is_dir()]
    complete = [c for c in candidates if c.complete]
    here = next((c for c in candidates if c.folder == final), None)
    if not complete:
        if here is not None:
            raise CheckpointError(f"cannot resume: {here.problem}, and there is no earlier complete checkpoint to fall back on"
                                  + (f"; {fix}" if fix else ""))
        for c in candidates:
            log.warning("removing %s: an interrupted save (%s)", c.folder, c.problem)
            remove_tree(c.folder)
        return None
    best = max(complete, key=lambda c: c.step)  # max keeps the first of equals: `final` before the others
    if best.folder != final:
        if here is not None and not here.complete:
            damaged = final.with_name(final.name + DAMAGED)
            log.warning("%s; falling back to the complete checkpoint of step %d in %s (the damaged folder is kept as %s)",
                        here.problem, best.step, best.folder, damaged)
            remove_tree(damaged)
            replace(final, damaged)
        else:
            log.warning("using the complete version of step %d that an interrupted save left in %s", best.step, best.folder)
            if here is not None:  # complete but older than `best`
                remove_tree(final)
        replace(best.folder, final)
        fsync_dir(final.parent)
    for leftover in (staging(final), previous(final)):  # older or incomplete: `final` is the newest complete one now
        if leftover.exists():
            remove_tree(leftover)
    return Inspection(final, best.step, verified=best.verified)


def trim_log(path: Path, step: int) -> None:
    """Keep the log records of steps ≤ `step` (the step a run continues from): a killed run's later
    records (and a half-written last line) would otherwise appear twice or break the JSONL."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + STAGING)
    with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    replace(tmp, path)


__all__ = ["CheckpointError", "Inspection", "commit", "inspect", "prepare", "recover", "seal", "trim_log"]
