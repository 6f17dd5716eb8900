"""Run directories: what makes a folder one, naming a new one, its config record, and the
events.jsonl log every run keeps.

    runs/NAME/config.toml  tokenizer/  events.jsonl  checkpoints/  export/hf/
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.config import ConfigError, RunConfig, load_config, save_config
from engine.errors import UserFacingError
from engine.runs.events import Event, event_from_dict

EVENTS_FILE = "events.jsonl"
CONFIG_FILE = "config.toml"
CHECKPOINTS = "checkpoints"
RUN_CONFIG_HEADER = "The full resolved config this run used."
# Any of these marks a folder as a run's: the config is written before the first event by a
# launcher, and the events before the config by a run that is still preparing its data.
RUN_MARKERS = (CONFIG_FILE, EVENTS_FILE, CHECKPOINTS)


class NotARunDir(UserFacingError):
    """A folder that was named as a run directory and is not one."""


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether a run lives (or has started to live) in `path`."""
    return any((Path(path) / marker).exists() for marker in RUN_MARKERS)


def existing_run_dir(path: str | os.PathLike[str]) -> Path:
    """`path` as a run directory; NotARunDir says why not."""
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise NotARunDir(f"{run_dir} is not a run directory (no such folder; runs live under runs/)")
    if not is_run_dir(run_dir):
        raise NotARunDir(f"{run_dir} is not a run directory (it has no {CONFIG_FILE} or {EVENTS_FILE})")
    return run_dir


def run_config(run_dir: Path) -> RunConfig:
    """The config a run recorded; NotARunDir when it has none yet, ConfigError when unreadable."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise NotARunDir(f"{run_dir} has no {CONFIG_FILE} yet (a run still preparing its data, or not a run)")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise NotARunDir(f"{path}: {exc}") from None


def write_run_config(run_dir: Path, config: RunConfig) -> Path:
    """Record `config` as the one the run in `run_dir` uses (atomically)."""
    return save_config(config, Path(run_dir) / CONFIG_FILE, header=RUN_CONFIG_HEADER)


def empty_run_dir(path: str | os.PathLike[str]) -> Path:
    """A folder to train a new run into (made if missing), refused once a run has started there.
    A config.toml alone is allowed: a launcher writes it before the process that trains."""
    run_dir = Path(path).expanduser()
    if any((run_dir / marker).exists() for marker in (EVENTS_FILE, CHECKPOINTS)):
        raise UserFacingError(f"{run_dir} already holds a run; continue it with `lightlm-tui resume {run_dir}` "
                              "or pick a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def new_run_dir(runs_dir: str | os.PathLike[str], name: str = "") -> Path:
    """A fresh folder under `runs_dir`: NAME, or NAME-2, NAME-3 ... if taken; a timestamp when
    no name is given. Never reuses (and so never overwrites) an existing run."""
    root = Path(runs_dir).expanduser()
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or time.strftime("run-%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 10_000):
        candidate = root / (base if suffix == 1 else f"{base}-{suffix}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"cannot find a free run name for {base!r} under {root}")


class EventLog:
    """Appends each event as one JSON line to RUN_DIR/events.jsonl (thread-safe, line-buffered)."""

    def __init__(self, run_dir: Path) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(run_dir) / EVENTS_FILE
        self._lock = threading.Lock()
        self._handle = open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, event: Event) -> None:
        with self._lock:
            if not self._handle.closed:
                self._handle.write(event.to_json() + "\n")

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_events(run_dir: Path) -> Iterator[Event]:
    """The events a run logged, in order; a torn last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield event_from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue


@dataclass(frozen=True)
class RunSummary:
    """One line about a run, from its events.jsonl: for run lists."""

    path: Path
    name: str
    # completed | stopped | failed | running | interrupted (its process died) | unfinished
    # (not started yet, or trained on another host: liveness unknown)
    status: str
    step: int
    total_steps: int
    best_val_bpb: float | None
    last_event_time: float
    params: int = 0
    active_params: int = 0  # per token; below params for a mixture of experts


def summarize_run(run_dir: Path) -> RunSummary:
    """What a run's events say about it (a missing or empty log reads as unfinished, step 0)."""
    run_dir = Path(run_dir)
    status, step, total, best = "unfinished", 0, 0, None
    params = active = 0
    for event in read_events(run_dir):
        if event.type == "run_started":
            total, status = event.total_steps, liveness(event.pid, event.pid_started, event.host)
            params, active = event.params, event.active_params or event.params
        elif event.type == "step":
            step = event.step
        elif event.type == "eval":
            best = event.val_bpb if best is None else min(best, event.val_bpb)
        elif event.type == "finished":
            status, step = event.status, event.step
    log = run_dir / EVENTS_FILE
    return RunSummary(run_dir, run_dir.name, status, step, total, best,
                      log.stat().st_mtime if log.exists() else 0.0, params, active)


def liveness(pid: int, pid_started: float, host: str) -> str:
    """"running" or "interrupted" for a training process on this host; "unfinished" when unknown."""
    if not pid or host != socket.gethostname():
        return "unfinished"
    try:
        alive = abs(psutil.Process(pid).create_time() - pid_started) < 1.0
    except psutil.Error:  # no such process (or not ours to look at)
        alive = False
    return "running" if alive else "interrupted"


def list_runs(runs_dir: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run directory under `runs_dir`, newest first."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        return []
    runs = [summarize_run(p) for p in root.iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(runs, key=lambda r: r.last_event_time, reverse=True)
