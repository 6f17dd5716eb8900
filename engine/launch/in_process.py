"""Train in this process, on the calling thread: the one way a run's events reach its
events.jsonl and a listener, whether the caller is the CLI, a torchrun rank or the app's
engine thread.

Under DDP rank 0 writes the run's log; the Trainer passes the other ranks' errors alone on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.config import RunConfig
from engine.runs.events import Event, RunFinished
from engine.runs.run_dir import EventLog


def train_here(
    config: RunConfig,
    run_dir: Path,
    on_event: Callable[[Event], None],
    control: object | None = None,
    resume: bool = False,
    threads: int | None = None,
    budget_started_at: float | None = None,
) -> RunFinished:
    """Train `config` into `run_dir` (or continue it, with `resume`) and return how it ended.
    `control` is the engine.train.decision.TrainControl another thread pauses or stops it with."""
    from engine.train.distributed import from_environment
    from engine.train.trainer import Trainer  # torch loads here, on the calling thread

    main_rank = from_environment().is_main
    log = EventLog(run_dir) if main_rank else None

    def emit(event: Event) -> None:
        if log is not None:
            log.write(event)
        on_event(event)

    try:
        return Trainer(config, run_dir, emit, control, resume=resume, threads=threads,
                       budget_started_at=budget_started_at).run()
    finally:
        if log is not None:
            log.close()
