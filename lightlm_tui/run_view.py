"""What the Monitor shows, folded from events: pure data, no widgets, so it is easy to test.

Series are kept in bounded deques (O(1) per point); `decimate` cuts a series to about two
points per screen column (min and max of each bucket) before it is drawn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine.runs.events import (
    CheckpointSaved,
    DataProgress,
    EngineError,
    EvalResult,
    Event,
    LogLine,
    MicroBatchReduced,
    PauseChanged,
    RolledBack,
    RunFinished,
    RunStarted,
    StepMetrics,
    StepSkipped,
)

MAX_POINTS = 20_000


@dataclass
class RunView:
    run_dir: str = ""
    params: int = 0
    trainable_params: int = 0  # below params when only adapters train (LoRA)
    total_steps: int = 0
    device: str = ""
    dtype: str = ""
    last: StepMetrics | None = None
    last_eval: EvalResult | None = None
    finished: RunFinished | None = None
    paused: bool = False
    time_budget_s: float = 0.0
    process: tuple[int, float, str] = (0, 0.0, "")  # (pid, its start time, host) of the training process
    loss: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    val_loss: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    tokens_per_s: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    ram_mb: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    checkpoints: list = field(default_factory=list)
    log: deque = field(default_factory=lambda: deque(maxlen=500))
    reports: int = 0  # step events folded in so far (the series are capped; this never is)
    # Faults the run survived: out-of-memory halvings, skipped (non-finite) steps, a roll-back.
    micro_batch: MicroBatchReduced | None = None
    skipped_steps: int = 0
    rolled_back: RolledBack | None = None
    preparing: DataProgress | None = None  # the data phase under way before the first step
    version: int = 0  # events folded in so far: a screen redraws only when it moved

    def apply(self, event: Event) -> None:
        """Fold one event into the view. A RunStarted of another run starts the view afresh
        (the same run's, on resume, continues its series)."""
        self.version += 1
        if isinstance(event, RunStarted):
            if self.run_dir and event.run_dir != self.run_dir:
                self.__dict__.update(RunView(version=self.version).__dict__)  # nothing of the other run stays
            self.run_dir, self.params, self.total_steps = event.run_dir, event.params, event.total_steps
            self.trainable_params = event.trainable_params
            self.device, self.dtype, self.finished = event.device, event.dtype, None
            self.process = (event.pid, event.pid_started, event.host)
            self.time_budget_s = event.time_budget_s
        elif isinstance(event, DataProgress):
            self.preparing = event
        elif isinstance(event, StepMetrics):
            self.last = event
            self.reports += 1
            self.loss.append((event.step, event.loss))
            self.tokens_per_s.append((event.step, event.tokens_per_s))
            self.ram_mb.append((event.step, event.vram_mb or event.ram_mb))
        elif isinstance(event, EvalResult):
            self.last_eval = event
            self.val_loss.append((event.step, event.val_loss))
        elif isinstance(event, CheckpointSaved):
            self.checkpoints.append(event)
        elif isinstance(event, LogLine):
            self.log.append(f"{event.level}: {event.text}" if event.level != "info" else event.text)
        elif isinstance(event, MicroBatchReduced):
            self.micro_batch = event
        elif isinstance(event, StepSkipped):
            self.skipped_steps = event.total
        elif isinstance(event, RolledBack):
            self.rolled_back = event
        elif isinstance(event, PauseChanged):
            self.paused = event.paused
        elif isinstance(event, EngineError):
            self.log.append(f"error: {event.message}")
        elif isinstance(event, RunFinished):
            self.finished = event
            self.paused = False

    @property
    def progress(self) -> float:
        if not self.total_steps or self.last is None:
            return 0.0
        return min(1.0, self.last.step / self.total_steps)


def decimate(points, columns: int) -> list[float]:
    """The values of `decimate_points` (for graphs that need no step axis)."""
    return decimate_points(points, columns)[1]


def decimate_points(points, columns: int) -> tuple[list[float], list[float]]:
    """(steps, values) cut to about two points per column: each bucket's min and max, in step
    order, so spikes survive while a long run costs no more to draw than a short one."""
    points = list(points)
    if len(points) <= 2 * columns or columns <= 0:
        return [p[0] for p in points], [p[1] for p in points]
    size = len(points) / columns
    kept: list[tuple[float, float]] = []
    for i in range(columns):
        bucket = points[int(i * size): int((i + 1) * size)] or [points[-1]]
        low = min(bucket, key=lambda p: p[1])
        high = max(bucket, key=lambda p: p[1])
        kept.extend(sorted({low, high}))
    return [p[0] for p in kept], [p[1] for p in kept]
