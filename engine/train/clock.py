"""Training time against time spent on other things (pausing, evaluating, checkpointing).

One object keeps both, so nothing threads "time not spent training" by hand: the loop wraps
what is not training in `with clock.excluded("eval"):`, and whoever needs a figure asks:
tokens/s divides by `lap()` (training seconds since the last lap), the run's elapsed time is
`training_s()`, and a time budget, which eval and checkpoints do spend but a pause does not,
subtracts `excluded_s("pause")`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PAUSE, EVAL, CHECKPOINT = "pause", "eval", "checkpoint"


class TrainingClock:
    """Counts from construction; `now` is injectable so tests control time."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.started = now()
        self._excluded: dict[str, float] = {}
        self._lap_at = self.started
        self._lap_excluded = 0.0

    @contextmanager
    def excluded(self, kind: str) -> Iterator[None]:
        """Time inside the block is not training time (it is counted under `kind`)."""
        began = self.now()
        try:
            yield
        finally:
            spent = self.now() - began
            self._excluded[kind] = self._excluded.get(kind, 0.0) + spent

    def excluded_s(self, kind: str | None = None) -> float:
        """Seconds excluded under `kind`, or under every kind."""
        if kind is None:
            return sum(self._excluded.values())
        return self._excluded.get(kind, 0.0)

    def training_s(self) -> float:
        """Seconds since the start that were training."""
        return self.now() - self.started - self.excluded_s()

    def lap(self) -> float:
        """Training seconds since the previous lap (or the start), and start a new lap."""
        now, excluded = self.now(), self.excluded_s()
        seconds = (now - self._lap_at) - (excluded - self._lap_excluded)
        self._lap_at, self._lap_excluded = now, excluded
        return seconds

    def since_lap(self) -> float:
        """Training seconds since the previous lap, without starting a new one."""
        return (self.now() - self._lap_at) - (self.excluded_s() - self._lap_excluded)
