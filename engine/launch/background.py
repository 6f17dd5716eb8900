"""Start a training command as its own background process (`train --detach`, `resume --detach`).

The child is a new session (closing the terminal, or Ctrl-C in it, does not reach it), reads
nothing, and writes everything it prints to RUN_DIR/engine.log. It is controlled through the
run dir like any run (engine/runs/control_channel.py) and watched with `lightlm-tui monitor`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOG_FILE = "engine.log"
# Long enough to catch a child that dies on start-up (a bad import, an unreadable config),
# short enough that the command still returns at once.
STARTUP_CHECK_S = 1.5


@dataclass(frozen=True)
class Detached:
    pid: int
    run_dir: Path
    log: Path


class DetachError(RuntimeError):
    """The background process exited at once; the message carries the end of its log."""


def start_detached(cli_args: list[str], run_dir: Path, module: str = "engine.cli") -> Detached:
    """Run `python -m MODULE *cli_args` in the background (with module "", `python *cli_args`:
    e.g. `-m torch.distributed.run ...`), logging to RUN_DIR/engine.log."""
    log_path = Path(run_dir) / LOG_FILE
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines land as they are printed
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, *(["-m", module] if module else []), *cli_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=env,
        )
    deadline = time.monotonic() + STARTUP_CHECK_S
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None and code != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise DetachError(f"the background run exited at once (code {code}); {log_path} ends with:\n"
                              + "\n".join(tail))
        if code == 0:
            break
        time.sleep(0.1)
    return Detached(process.pid, Path(run_dir), log_path)
