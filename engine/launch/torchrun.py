"""Start the engine as several processes under torchrun (PyTorch's own launcher).

`lightlm-tui train --nproc N` (or `resume --nproc N`) resolves the config and the run dir once,
in this process (engine.api.start_run), then runs `python -m torch.distributed.run ... -m engine.cli train --config
RUN_DIR/config.toml --run-dir RUN_DIR` (or `resume RUN_DIR`); every rank then trains as
engine/train/distributed.py describes. Several machines: the same command on each with
`--nnodes`, its own `--node-rank` and node 0's address as `--rdzv-endpoint HOST:PORT`; node 0
holds rank 0, which writes the run dir.

The launcher runs in its own session, so a Ctrl-C in the terminal reaches only this process,
which turns it into a `stop` request through the run's control channel: rank 0 reads it and
every rank stops at the same step, with a checkpoint. A second Ctrl-C ends the launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.runs.control_channel import send_request

# A budget counts from the launcher's start, not each rank's (set for the ranks' processes).
BUDGET_START_ENV = "LIGHTLM_BUDGET_STARTED_AT"
DEFAULT_PORT = 29500
# How long node 0 waits for the other machines to join before it gives up with a sentence
# (torchrun's own default is 10 minutes). LIGHTLM_JOIN_TIMEOUT_S overrides it.
JOIN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Launch:
    """How many processes, on how many machines."""

    nproc: int | None = None  # None: the run config's train.processes (see for_config)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""  # HOST[:PORT] of node 0; needed with more than one node

    def for_config(self, processes: int) -> Launch:
        """This launch with the process count filled in from train.processes when unset."""
        return self if self.nproc is not None else replace(self, nproc=processes)

    @property
    def world_size(self) -> int:
        return (self.nproc or 1) * self.nnodes

    def problems(self) -> list[str]:
        found = []
        if (self.nproc is not None and self.nproc < 1) or self.nnodes < 1:
            found.append("--nproc and --nnodes must be at least 1")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            found.append("with --nnodes > 1, give node 0's address as --rdzv-endpoint HOST:PORT on every node")
        if not 0 <= self.node_rank < self.nnodes:
            found.append(f"--node-rank must be between 0 and {self.nnodes - 1}")
        return found


def torchrun_command(launch: Launch, cli_args: list[str]) -> list[str]:
    """The torchrun command line that runs `engine.cli *cli_args` as every rank of `launch`."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launch.nproc}"]
    if launch.nnodes == 1 and not launch.rdzv_endpoint:
        command.append("--standalone")
    else:
        host, _, port = launch.rdzv_endpoint.partition(":")
        # Static rendezvous: node-rank 0 is where rank 0 (the one that writes the run dir) lives.
        command += [f"--nnodes={launch.nnodes}", f"--node_rank={launch.node_rank}",
                    f"--master_addr={host}", f"--master_port={port or DEFAULT_PORT}",
                    f"--rdzv_conf=timeout={join_timeout_s()}"]
    return [*command, "-m", "engine.cli", *cli_args]


def join_timeout_s() -> int:
    return int(os.environ.get("LIGHTLM_JOIN_TIMEOUT_S", JOIN_TIMEOUT_S))


def run_under_torchrun(launch: Launch, cli_args: list[str], run_dir: Path, budget_started_at: float | None,
                       say: Callable[[str], None]) -> int:
    """Run the ranks in the foreground and return torchrun's exit code (saying why when the
    machines never got together)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if budget_started_at is not None:
        env[BUDGET_START_ENV] = repr(budget_started_at)
    process = subprocess.Popen(torchrun_command(launch, cli_args), env=env, start_new_session=True)
    interrupts = 0

    def on_interrupt(signum, frame) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and launch.node_rank == 0:
            send_request(run_dir, "stop")
            say("stopping every rank after this step and saving a checkpoint (Ctrl-C again to end at once)")
        else:
            process.terminate()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if code != 0 and launch.nnodes > 1 and not (run_dir / "events.jsonl").exists() and launch.node_rank == 0:
        say(f"the run did not start: not every machine joined at {launch.rdzv_endpoint} within {join_timeout_s()} s "
            f"(all {launch.nnodes} must run the same command with their own --node-rank); nothing was trained")
    return code


def budget_start_from_environment() -> float | None:
    value = os.environ.get(BUDGET_START_ENV)
    return float(value) if value else None
