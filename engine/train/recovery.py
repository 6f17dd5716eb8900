"""What a run does when a step, an evaluation or a save goes wrong, and the count that decides it.

- Out of memory: the step (or the evaluation) has already halved its micro-batch and run the same
  windows again; `Recovery` notes the size in the state, so a resume keeps it, and says so. At one
  window there is nothing smaller to try: `out_of_memory_at_one_window` saves what the run has and
  says what would fit.
- A skipped step (a non-finite loss or gradients): `Recovery` counts the bad steps in a row. At
  train.max_bad_steps it raises `RollBack` and the loop goes back to the last checkpoint at half
  the learning rate, once; the next time, or with no checkpoint to go back to, the run stops with
  a sentence.
- A checkpoint that cannot be written (a full disk, a read-only folder): the previous one stays
  the latest, and training goes on unless that was the run's last save.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from engine.config import RunConfig, TrainConfig
from engine.model.estimates import training_memory
from engine.runs.checkpoint import TrainState, latest_name
from engine.runs.events import Event, LogLine, MicroBatchReduced, RolledBack, StepSkipped
from engine.train import distributed
from engine.train.distributed import Distributed
from engine.train.errors import TrainingError
from engine.train.faults import OutOfMemoryAtOneWindow

# The saves a run ends with: when one fails, the run stops instead of training on unsaved.
LAST_SAVES = ("final", "stop", "out of memory")
ADVICE = ("lower train.learning_rate, keep train.grad_clip on, or use bfloat16 instead of float16; "
          "the last checkpoint is intact")


class RollBack(Exception):
    """Raised by `Recovery.step_counted`: the loop goes back to the last checkpoint."""


class Recovery:
    """The run's answers to faults (see the module docstring); the one owner of the count of bad
    steps in a row. The state's notes it writes go into the next checkpoint."""

    def __init__(self, train: TrainConfig, run_dir: Path, emit: Callable[[Event], None]) -> None:
        self.train, self.run_dir, self.emit = train, Path(run_dir), emit
        # Skipped steps since the last applied one (or the last roll-back).
        self.bad_in_a_row = 0

    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(level, text))

    def micro_batch_reduced(self, state: TrainState, size: int, times: int) -> None:
        """The step after `state.step` ran out of memory `times` times; it now takes `size` windows a micro-batch."""
        notes = state.notes
        notes.micro_batch_size, notes.memory_retries = size, notes.memory_retries + times
        self.emit(MicroBatchReduced(state.step + 1, size, notes.memory_retries, "step"))
        self._log(f"out of memory at step {state.step + 1}: the micro-batch is now {size} windows "
                  f"({self.train.batch_size * self.train.accumulation_steps} per step, as before)", "warning")

    def eval_micro_batch_reduced(self, state: TrainState, size: int) -> None:
        """The evaluation after `state.step` ran out of memory; its passes now take `size` windows."""
        notes = state.notes
        notes.eval_micro_batch_size, notes.memory_retries = size, notes.memory_retries + 1
        self.emit(MicroBatchReduced(state.step, size, notes.memory_retries, "eval"))

    def step_counted(self, state: TrainState, skipped: bool) -> None:
        """After each step the state counts: an applied one ends a run of bad steps; a skipped one
        adds to it, and the max_bad_steps-th raises RollBack (or TrainingError when going back
        cannot help: it was tried once, or there is no checkpoint)."""
        if not skipped:
            self.bad_in_a_row = 0
            return
        self.bad_in_a_row += 1
        state.notes.skipped_steps += 1
        self.emit(StepSkipped(state.step, self.bad_in_a_row, state.notes.skipped_steps))
        if self.bad_in_a_row < self.train.max_bad_steps:
            return
        if state.notes.rolled_back:
            raise TrainingError(f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradients again, by "
                                f"step {state.step}, after going back once at half the learning rate; {ADVICE}.")
        if latest_name(self.run_dir) is None:
            raise TrainingError(f"the first {state.step} steps had a non-finite loss or gradients and there is "
                                f"no checkpoint to go back to; {ADVICE}.")
        raise RollBack()

    def rolled_back(self, from_step: int, state: TrainState) -> None:
        """The loop went back from `from_step` to the checkpoint whose `state` it restored: the
        rest of the run goes at half the learning rate, and does not go back again."""
        state.notes.rolled_back = True
        state.notes.lr_scale *= 0.5
        self.bad_in_a_row = 0
        self.emit(RolledBack(from_step, state.step, state.notes.lr_scale))
        self._log(f"{self.train.max_bad_steps} bad steps in a row by step {from_step}: went back to step "
                  f"{state.step} with the learning rate x{state.notes.lr_scale:g}", "warning")

    def checkpoint_failed(self, name: str, reason: str, exc: Exception) -> None:
        """Checkpoint `name` could not be written; the previous one stays the latest. Training goes
        on (the next save tries again) unless this was one of the run's LAST_SAVES."""
        latest = latest_name(self.run_dir)
        kept = f"{latest} is intact and stays the latest" if latest else "there is no earlier checkpoint"
        sentence = (f"could not write checkpoint {name} in {self.run_dir / 'checkpoints'}: "
                    f"{getattr(exc, 'strerror', None) or exc} (a full disk or a read-only folder?); {kept}")
        if reason in LAST_SAVES:
            raise TrainingError(f"{sentence}; free space (or fix the folder) and `lightlm-tui resume {self.run_dir}`"
                                " continues from the latest checkpoint.")
        self._log(f"{sentence}; training goes on and the next save tries again", "warning")


def out_of_memory_at_one_window(exc: OutOfMemoryAtOneWindow, config: RunConfig, device_type: str,
                                save: Callable[[], None]) -> str:
    """Save what the run has (`save()`: the last complete step) and say what would fit."""
    saved = "; the last complete step is checkpointed"
    try:
        save()
    except Exception:  # a disk as full as the memory: the previous checkpoint stays the latest
        saved = "; no checkpoint could be written now, the previous one is intact"
    t = config.train
    one = training_memory(config.model, dataclasses.replace(t, batch_size=1), device_type=device_type)
    where = f"step {exc.step}" if exc.where == "step" else f"the evaluation after step {exc.step}"
    return (f"out of memory at {where} even with one window per micro-batch{saved}. One window "
            f"needs about {one.total / 2**20:,.0f} MiB by the estimate (weights {one.weights / 2**20:,.0f}, "
            f"optimizer {one.optimizer / 2**20:,.0f}, activations {one.activations / 2**20:,.0f}); turn on "
            f"train.gradient_checkpointing, shorten train.max_seq_len (now {t.max_seq_len}), or use a smaller model.")


def failure_message(exc: Exception, place: Distributed) -> str:
    """The sentence a run that stopped on `exc` ends with: the user's own for a TrainingError
    (or any ValueError or OSError), one for a failed collective, or an engine bug's type and text."""
    if isinstance(exc, (TrainingError, ValueError, OSError)):
        return str(exc)
    if isinstance(exc, distributed.DIST_ERRORS):
        return distributed.explain(exc, place)
    if place.enabled and any(word in str(exc).lower() for word in ("gloo", "nccl")):
        return distributed.explain(exc, place)
    return f"{exc.__class__.__name__}: {exc}"
