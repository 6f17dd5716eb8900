"""Running on time: how far a budgeted run has got, and when its training must stop.

With `train.time_budget_s` set, the run must be over (final evaluation and checkpoint
included) when the budget is spent, counted from `started_at` (for the CLI: when the process
started, so imports, planning and data preparation count too). Training gets the window up to
`deadline - reserve_s`; the reserve is what the final evaluation, the final checkpoint and the
exit are expected to take, re-estimated from measurements as the run goes. The learning-rate
schedule reads `progress()`, the fraction of that window used, so warmup and cosine decay end
when the window does, however fast the steps turn out to be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# After the final checkpoint: printing the summary and the interpreter's exit.
EXIT_TAIL_S = 0.5
# Under torchrun, also leaving the process group and torchrun noticing its workers ended:
# measured 3-3.5 s on the 2-core machine (AMD EPYC, loaded), 2026-11-26.
DDP_EXIT_TAIL_S = 3.0


@dataclass
class BudgetClock:
    budget_s: float
    started_at: float  # wall-clock time (time.time()) the budget is counted from
    start_progress: float = 0.0  # a resumed run continues its schedule from here
    # Wall-clock time (time.time()); a trainer passes it less the time paused, which the budget does not count.
    clock: Callable[[], float] = time.time
    eval_s: float = 0.0  # what one evaluation takes (measured, or estimated until measured)
    checkpoint_s: float = 0.0  # what one checkpoint takes (likewise)
    step_s: float = 0.0  # a moving average of one optimizer step
    # Until an evaluation has been timed, it is guessed as this many optimizer steps
    # (eval batches are forward-only: about a third of a training micro-batch, plus overhead).
    eval_in_steps: float = 0.0
    exit_tail_s: float = EXIT_TAIL_S  # what ending the process takes after the final checkpoint
    _eval_measured: bool = field(default=False, init=False)
    _training_from: float | None = field(default=None, init=False)
    _progress: float = field(default=0.0, init=False)

    @property
    def deadline(self) -> float:
        return self.started_at + self.budget_s

    @property
    def reserve_s(self) -> float:
        """Time kept back for the final evaluation, checkpoint and exit."""
        return self.eval_s + self.checkpoint_s + self.exit_tail_s

    def start_training(self) -> None:
        """Mark the first optimizer step: the schedule's window runs from here."""
        self._training_from = self.clock()
        self._progress = self.start_progress

    def record_step(self, seconds: float) -> None:
        self.step_s = seconds if self.step_s == 0 else 0.8 * self.step_s + 0.2 * seconds
        if self.eval_in_steps and not self._eval_measured:
            self.eval_s = self.eval_in_steps * self.step_s

    def measured_eval(self, seconds: float) -> None:
        """An evaluation took `seconds`: the final one will take about as long."""
        self.eval_s, self._eval_measured = seconds, True

    def progress(self) -> float:
        """Fraction of the training window used, in [start_progress, 1]; never goes back."""
        if self._training_from is None:
            self.start_training()
        window = self.deadline - self.reserve_s - self._training_from
        used = (self.clock() - self._training_from) / window if window > 0 else 1.0
        current = self.start_progress + (1.0 - self.start_progress) * min(1.0, max(0.0, used))
        self._progress = max(self._progress, current)
        return self._progress

    def out_of_time(self) -> bool:
        """True when another step would run into the reserve: stop training now."""
        return self.clock() + self.step_s + self.reserve_s >= self.deadline

    def used_s(self) -> float:
        """Seconds of the budget spent since `started_at`."""
        return self.clock() - self.started_at

    def remaining_s(self) -> float:
        """Seconds until the whole run should be over."""
        return max(0.0, self.deadline - self.clock())
