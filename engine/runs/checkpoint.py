"""Checkpoints: everything a run needs to continue exactly, written so a crash never corrupts one.

Layout of one checkpoint (RUN_DIR/checkpoints/step_000500/):
    model.safetensors   weights
    optimizer.pt        optimizer state (tensors and numbers only; read with weights_only=True)
    rng.safetensors     torch RNG states (CPU, and each CUDA device)
    config.toml         the run config
    state.json          step, epoch, elapsed time, tokens seen, config hash, the run's notes (written last)

state.json also holds each other file's SHA-256, checked on load: safetensors has no checksum
of its own, so a flipped bit in the weights would otherwise load silently. It carries its
format's version (`STATE_VERSION`); a state.json with none is format 1 (an untyped `extra`
dict in place of the notes), read as it was written.

A checkpoint is assembled in a temporary folder, every file fsynced, and renamed into place;
RUN_DIR/checkpoints/latest (a one-line text file naming the folder) is then replaced
atomically. So `latest` only ever names a complete checkpoint, and a half-written one is a
`.tmp-*` folder that loading ignores. Nothing read from disk is unpickled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.config import RunConfig, config_to_dict, dumps_config
from engine.data.loader import DATA_ORDER_VERSION
from engine.errors import UserFacingError

REQUIRED_FILES = ("model.safetensors", "optimizer.pt", "rng.safetensors", "config.toml", "state.json")
SHA256_KEY = "sha256"  # in state.json: {file name: hex digest} of the other files
LATEST = "latest"
VERSION_KEY = "version"  # in state.json: its format (absent: format 1)
# 2: the run's notes as typed fields under "notes"; 1: the same facts in an `extra` dict that held
# only the keys a run had set.
STATE_VERSION = 2


class CheckpointError(UserFacingError):
    """A checkpoint that cannot be used; names it, and the previous complete one if any."""


@dataclass
class RunNotes:
    """What a run noted about itself on the way, beyond its position, that a resume carries on
    with. A fresh run starts with the defaults."""

    # The order its training windows are drawn in (engine/data/loader.py): a run keeps the order
    # it started in, so a resume draws the same windows. Format 1 checkpoints written before the
    # order was versioned have none, and drew order 1.
    data_order: int = DATA_ORDER_VERSION
    # Out of memory halved the step's micro-batch to this many windows (None: never halved, so
    # train.batch_size); a resume starts at this size instead of running into the wall again.
    micro_batch_size: int | None = None
    # The same for the evaluation's passes (None: never halved, so the step's micro-batch).
    eval_micro_batch_size: int | None = None
    # Micro-batch halvings so far, steps and evaluations together (MicroBatchReduced counts on).
    memory_retries: int = 0
    # Steps skipped for a non-finite loss or gradients so far (StepSkipped counts on).
    skipped_steps: int = 0
    # Whether max_bad_steps in a row already sent the run back to a checkpoint: that happens once,
    # the next time it stops with a sentence.
    rolled_back: bool = False
    # The factor on train.learning_rate: a roll-back halves it, and the rest of the run (a resume
    # included) keeps the lower rate.
    lr_scale: float = 1.0
    # The float16 loss scaler's state_dict (None: no scaler); a resume goes on at the scale the
    # run had found, not at a fresh scaler's.
    grad_scaler: dict[str, float] | None = None
    # The step the last evaluation ran after (None: none yet); a run that ends there does not
    # evaluate the same weights again.
    eval_step: int | None = None
    # A time-budgeted run: seconds of train.time_budget_s spent up to this checkpoint, and how far
    # its schedule had got (0 to 1); a resume gets the rest of the budget and goes on with the
    # learning-rate schedule from there.
    budget_used_s: float = 0.0
    budget_progress: float = 0.0
    # A fine-tune's base weights, {"checkpoint": folder, "sha256": its weights' hash} (empty: from
    # scratch). A LoRA checkpoint holds only adapters, so loading one reads this base and refuses
    # it if its hash changed.
    base: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainState:
    """Where a run is: enough, with the weights and optimizer, to continue it exactly."""

    step: int = 0  # optimizer steps completed; the loader's position is a function of it
    epoch: float = 0.0
    tokens_seen: int = 0
    elapsed_s: float = 0.0  # training wall time before the current session
    config_hash: str = ""
    val_loss: float | None = None
    val_bpb: float | None = None
    best_val_loss: float | None = None
    notes: RunNotes = field(default_factory=RunNotes)


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk, and what it holds once loaded."""

    path: Path
    state: TrainState
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: dict[str, torch.Tensor]


def config_hash(config: RunConfig) -> str:
    """A short hash of the settings that shape the model and the data order: the model section,
    the data section (less where its cache lives), the seed, the window length and the windows
    per step. Logging, evaluation, checkpoint and schedule settings, and how a step's windows
    are split into micro-batches, change neither, so changing them on resume raises no warning."""
    sections = config_to_dict(config)
    t = config.train
    shaping = {
        "model": sections["model"],
        "data": {k: v for k, v in sections["data"].items() if k != "cache_dir"},
        "train": {"seed": t.seed, "max_seq_len": t.max_seq_len,
                  "windows_per_step": t.batch_size * t.accumulation_steps},
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not allow opening a directory
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_states() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{index}"] = state
    return states


def restore_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    run_dir: Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: RunConfig,
    after_file: Callable[[str], None] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `name` completely, then point `latest` at it; returns its folder.
    `after_file(name)` runs after each file is written (the seam fault tests kill through).
    `model_state` replaces the model's whole state dict as the weights saved (a LoRA run saves
    its adapters alone)."""
    after_file = after_file or (lambda file_name: None)
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    staging = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        state_dict = model.state_dict() if model_state is None else model_state
        weights = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        save_file(weights, staging / "model.safetensors")
        after_file("model.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        after_file("optimizer.pt")
        save_file(rng_states(), staging / "rng.safetensors")
        (staging / "config.toml").write_text(dumps_config(config), encoding="utf-8")
        digests = {f: _sha256(staging / f) for f in REQUIRED_FILES if f != "state.json"}
        record = {VERSION_KEY: STATE_VERSION, **asdict(state), SHA256_KEY: digests}
        (staging / "state.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        for file_name in REQUIRED_FILES:
            _fsync_file(staging / file_name)
        _fsync_dir(staging)
        replaced = root / f".replaced-{name}-{os.getpid()}"
        if final.exists():  # re-saving the same step (e.g. "save now" twice): replace it whole
            os.replace(final, replaced)
        os.replace(staging, final)
        _fsync_dir(root)
        shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_latest(root, name)
    return final


def _write_latest(root: Path, name: str) -> None:
    """Point `latest` at checkpoint `name`, replacing the pointer atomically."""
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(name + "\n", encoding="utf-8")
    _fsync_file(pointer)
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)


def _step_of(path: Path) -> int:
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step_* checkpoints (0 keeps all). Epoch
    checkpoints are never pruned, nor whatever `latest` names. Returns what was removed."""
    if keep_last <= 0:
        return []
    root = checkpoints_dir(run_dir)
    latest = latest_name(run_dir)
    steps = sorted((p for p in root.glob("step_*") if p.is_dir()), key=_step_of)
    removed = []
    for path in steps[:-keep_last]:
        if path.name != latest:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def latest_name(run_dir: Path) -> str | None:
    pointer = checkpoints_dir(run_dir) / LATEST
    if not pointer.is_file():
        return None
    return pointer.read_text(encoding="utf-8").strip() or None


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders with every required file, oldest first (by step, then time)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and all((p / f).is_file() for f in REQUIRED_FILES)
    ]
    return sorted(found, key=lambda p: (_read_step(p), p.stat().st_mtime))


def _read_step(path: Path) -> int:
    try:
        return int(json.loads((path / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def state_from_record(record: dict[str, Any], version: int = STATE_VERSION) -> TrainState:
    """The TrainState in state.json's `record` (less its version and checksums), as format
    `version` wrote it. Format 1's `extra` dict held only the keys a run had set: the others take
    the defaults, except a missing data order, which is 1 (such checkpoints predate the step-keyed
    order); keys no format knows are dropped (no release wrote any). Raises TypeError or
    ValueError for a record that is not one."""
    record = dict(record)
    if version == 1:
        extra = record.pop("extra", None) or {}
        known = {f.name for f in fields(RunNotes)}
        notes = RunNotes(**{"data_order": 1, **{k: v for k, v in extra.items() if k in known}})
    else:
        notes = RunNotes(**record.pop("notes", {}))
    return TrainState(**record, notes=notes)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read one checkpoint folder; any damage is a CheckpointError naming the file."""
    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: {', '.join(missing)} missing")
    try:
        record = json.loads((path / "state.json").read_text(encoding="utf-8"))
        digests = record.pop(SHA256_KEY, {})  # absent in checkpoints written before 2026-11-26
        version = record.pop(VERSION_KEY, 1)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path}: state.json is damaged ({exc})") from None
    if type(version) is not int or version < 1:
        raise CheckpointError(f"checkpoint {path}: state.json is damaged (its format version is {version!r})")
    if version > STATE_VERSION:
        raise CheckpointError(
            f"checkpoint {path} was written by a newer lightlm-tui (state.json format {version}; this version reads "
            f"formats up to {STATE_VERSION}); update lightlm-tui to resume or load it"
        )
    try:
        state = state_from_record(record, version)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path}: state.json is damaged ({exc})") from None
    for file_name, digest in digests.items():
        if _sha256(path / file_name) != digest:
            raise CheckpointError(f"checkpoint {path}: {file_name} is damaged (its contents changed since it was "
                                  "written: the checksum in state.json does not match)")
    try:
        model_state = load_file(path / "model.safetensors", device=str(map_location))
        rng = load_file(path / "rng.safetensors")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: weights are damaged ({exc})") from None
    try:
        optimizer_state = torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code with UnpicklingError, and more
        raise CheckpointError(
            f"checkpoint {path}: optimizer.pt cannot be read safely ({exc.__class__.__name__}); "
            "it holds something other than tensors and numbers, or is damaged"
        ) from None
    return Checkpoint(path, state, model_state, optimizer_state, rng)


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The checkpoint `latest` names. If it is damaged, the error names it and offers the
    newest other complete checkpoint (`resume RUN_DIR --from NAME` continues from that one)."""
    run_dir = Path(run_dir)
    name = latest_name(run_dir)
    candidates = complete_checkpoints(run_dir)
    if name is None:
        if not candidates:
            raise CheckpointError(f"{run_dir} has no checkpoint to resume from")
        return load_checkpoint(candidates[-1], map_location)
    try:
        return load_checkpoint(checkpoints_dir(run_dir) / name, map_location)
    except CheckpointError as exc:
        others = [p for p in candidates if p.name != name]
        offer = (f"; the previous complete one is {others[-1]}: continue from it with `lightlm-tui resume {run_dir} "
                 f"--from {others[-1].name}`" if others else "; no other complete checkpoint exists")
        raise CheckpointError(f"{exc}{offer}") from None


def point_latest_at(run_dir: Path, name: str) -> Checkpoint:
    """Make checkpoint `name` the one a resume continues from, after checking it loads whole.
    Later checkpoints stay on disk (nothing is deleted); the next save moves `latest` on."""
    checkpoint = load_checkpoint(checkpoints_dir(run_dir) / name)
    _write_latest(checkpoints_dir(run_dir), name)
    return checkpoint


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete what a killed process left half-written (`.tmp-*` staging folders, `.replaced-*`
    folders of a re-save): never a complete checkpoint, never what `latest` names. Call it only
    when no other process trains this run. Returns what was removed."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".replaced-"))]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
