"""Control a run from another process: pause, resume, save, eval and stop through its run dir.

A run started with `lightlm-tui train --detach`, under nohup, or in another terminal has no
thread a UI can reach. Every run therefore watches RUN_DIR/control.jsonl: a requester (an
attached Monitor, `lightlm-tui control RUN_DIR stop`) appends one JSON line per request,

    {"request": "pause", "at": 1795000000.0}

and the training process reads lines it has not seen between optimizer steps (a stat call,
at most every POLL_S) and while paused, and sets the matching TrainControl flag. The engine
acknowledges each request as a log line in events.jsonl, which every Monitor follows.

Only requests appended after the run (re)started count: the reader starts at the file's size
then, so an old `stop` never ends a resumed run. One short line per write with O_APPEND keeps
concurrent requesters from interleaving. Pure Python (no torch), so the UI can import it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Protocol

CONTROL_FILE = "control.jsonl"
REQUESTS = ("pause", "resume", "save", "eval", "stop")
POLL_S = 0.25


class Flag(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...


class Flags(Protocol):
    """The parts of engine.trainer.TrainControl a request sets (kept structural: no torch here)."""

    stop: Flag
    pause: Flag
    save_now: Flag
    eval_now: Flag


def send_request(run_dir: Path | str, request: str) -> Path:
    """Append `request` to the run's control file; returns the file's path."""
    if request not in REQUESTS:
        raise ValueError(f"unknown request {request!r}; use one of {', '.join(REQUESTS)}")
    path = Path(run_dir) / CONTROL_FILE
    line = json.dumps({"request": request, "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def apply_request(request: str, flags: Flags) -> None:
    """Set the TrainControl flag that carries out `request`."""
    if request == "pause":
        flags.pause.set()
    elif request == "resume":
        flags.pause.clear()
    elif request == "save":
        flags.save_now.set()
    elif request == "eval":
        flags.eval_now.set()
    elif request == "stop":
        flags.stop.set()


class ControlWatcher:
    """Reads new requests from RUN_DIR/control.jsonl; cheap enough to call every step."""

    def __init__(self, run_dir: Path | str, poll_s: float = POLL_S) -> None:
        self.path = Path(run_dir) / CONTROL_FILE
        self.poll_s = poll_s
        self._offset = self._size()
        self._next_poll = 0.0

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def poll(self) -> list[str]:
        """Requests appended since the last call (at most one file read per `poll_s`)."""
        now = time.monotonic()
        if now < self._next_poll:
            return []
        self._next_poll = now + self.poll_s
        size = self._size()
        if size < self._offset:
            self._offset = 0  # the file was replaced or truncated: read it from the start
        if size == self._offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read(size - self._offset)
        complete = data.rfind(b"\n") + 1  # leave a half-written last line for the next poll
        self._offset += complete
        requests = []
        for raw in data[:complete].splitlines():
            try:
                request = json.loads(raw).get("request")
            except (ValueError, AttributeError):
                continue
            if request in REQUESTS:
                requests.append(request)
        return requests
