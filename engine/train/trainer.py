"""A training run: the loop, evaluation, checkpoints.

`Trainer(config, run_dir, emit).run()` trains and returns the RunFinished event; everything it
has to say on the way goes through `emit` as events (engine/runs/events.py). A `TrainControl`
lets another thread pause, stop, save or evaluate between optimizer steps.

The loop (`_loop`) reads top to bottom and delegates each job: set-up builds the run's parts
once (engine/train/setup.py), the step's windows come from the loader (a pure function of seed
and step), one optimizer step is a `TrainStep`, what happens between steps is `decide()`'s
answer, training time against pause / eval / checkpoint time is the `TrainingClock`'s, and
what a fault calls for is `Recovery`'s (engine/train/recovery.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError

from engine.config import RunConfig
from engine.data.loader import BatchLoader
from engine.data.token_store import TokenStore
from engine.machine.device import release_cached_memory
from engine.model.builder import build_model
from engine.model.lora import adapter_state
from engine.runs.checkpoint import TrainState, prune_checkpoints, save_checkpoint
from engine.runs.control_channel import ControlWatcher
from engine.runs.events import (
    CheckpointSaved, EngineError, EvalResult, Event, LogLine, PauseChanged, RunFinished, for_run,
)
from engine.train import distributed
from engine.train.agreement import agreed
from engine.train.budget_clock import BudgetClock
from engine.train.clock import CHECKPOINT, EVAL, PAUSE, TrainingClock
from engine.train.decision import Boundary, Decision, RequestInbox, TrainControl, decide
from engine.train.errors import TrainingError
from engine.train.evaluate import evaluate_model
from engine.train.faults import OutOfMemoryAtOneWindow
from engine.train.metrics import step_metrics
from engine.train.recovery import Recovery, RollBack, failure_message, out_of_memory_at_one_window
from engine.train.report_window import ReportWindow
from engine.train.schedule import lr_at, lr_at_progress
from engine.train.setup import RunParts, budget_clock_for, restore_latest, set_up_run, total_steps_for
from engine.train.step import StepResult, TrainStep

__all__ = ["Trainer", "TrainControl", "TrainingError", "total_steps_for"]

PAUSE_POLL_S = 0.1  # how often a paused run looks for resume / stop


class Trainer:
    """One run, from data preparation to the final checkpoint."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        emit: Callable[[Event], None] = lambda event: None,
        control: TrainControl | None = None,
        resume: bool = False,
        threads: int | None = None,
        budget_started_at: float | None = None,
        model_builder: Callable[..., torch.nn.Module] = build_model,
    ) -> None:
        """`model_builder` (engine.model.builder.build_model's signature) is the seam a test
        uses to train a model that misbehaves on purpose."""
        self.config, self.run_dir = config, Path(run_dir)  # the config becomes the recorded one at set-up
        self.place = distributed.from_environment()
        self._emit_to = emit
        self.control = control or TrainControl()
        self.resume, self.threads = resume, threads
        # With train.time_budget_s: the wall-clock time (time.time()) the budget counts from
        # (the CLI passes its process's start); None means when run() is called.
        self.budget_started_at = budget_started_at
        self.model_builder = model_builder
        self._parts: RunParts | None = None  # what set-up builds (run() starts with it)
        self.state = TrainState()  # set-up's, then the loop's; a roll-back puts a checkpoint's back
        self.recovery = Recovery(config.train, self.run_dir, self.emit)
        self.inbox = RequestInbox(self.control, log=self._log)  # run() adds RUN_DIR/control.jsonl to it
        # This session of the loop (set as it starts): its clock, the steps since the last report,
        # the budget's clock, and facts decide() reads at each boundary.
        self.clock = TrainingClock()
        self.window: ReportWindow | None = None
        self.budget: BudgetClock | None = None
        self.start_step, self.previous_epoch, self.paused = 0, 0.0, False
        self.elapsed_before = 0.0  # the run's training seconds before this session (a roll-back moves it)
        self.last_checkpoint_at = 0.0  # time.perf_counter() of the last save (or of the loop's start)
        # Mean cross-entropy of each reported window (every step when log_interval=1).
        self.losses: list[float] = []
        self.loader_wait_s, self.train_s = 0.0, 0.0  # the loop's: waiting on the loader, and training

    # ----- what set-up built ---------------------------------------------------------------
    @property
    def parts(self) -> RunParts:
        if self._parts is None:
            raise RuntimeError("the run is not set up yet: run() (or _setup()) sets it up")
        return self._parts

    @property
    def store(self) -> TokenStore:
        return self.parts.store

    @property
    def model(self) -> torch.nn.Module:
        return self.parts.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts.optimizer

    @property
    def train_step(self) -> TrainStep:
        return self.parts.train_step

    def emit(self, event: Event) -> None:
        """Pass an event on, stamped with its run (so a screen can ignore other runs'). Under DDP
        rank 0 speaks for the run; the other ranks pass on only their errors."""
        if self.place.is_main or isinstance(event, EngineError):
            self._emit_to(for_run(event, str(self.run_dir)))

    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(level, text))

    def _setup(self) -> None:
        self._parts = set_up_run(self.config, self.run_dir, self.place, self._log, resume=self.resume, emit=self.emit,
                                 threads=self.threads, model_builder=self.model_builder)
        self.config, self.state = self.parts.config, self.parts.state

    # ----- the run -----------------------------------------------------------------------
    def run(self) -> RunFinished:
        """Train to the end (or until stopped); returns the RunFinished event it also emitted."""
        wall_start = time.perf_counter()
        # Requests from other processes (RUN_DIR/control.jsonl) count from now, set-up included,
        # and so does a time budget unless the caller started its clock earlier.
        # Rank 0 alone reads requests; its decisions reach the other ranks (see _decide).
        self.inbox.watcher = ControlWatcher(self.run_dir) if self.place.is_main else None
        self.budget_started_at = self.budget_started_at or time.time()
        try:
            self._setup()
            self.emit(self.parts.started(self.run_dir))
            status = self._loop()
            if self.state.val_loss is None or self.state.notes.eval_step != self.state.step:
                self._evaluate()
            self._checkpoint("final" if status == "completed" else "stop")
            # Ranks leave together: one tearing its connections down while rank 0 still writes
            # the final checkpoint made the other abort at exit (seen with the laptop preset).
            self.place.barrier()
            message = "" if status == "completed" else "stopped on request; resume continues from here"
        except OutOfMemoryAtOneWindow as exc:
            save = partial(self._checkpoint, "out of memory")
            message = out_of_memory_at_one_window(exc, self.config, self.parts.compute.device.type, save)
            return self._finish("failed", message, wall_start)
        except Exception as exc:  # never kill the caller's thread: say what went wrong
            return self._finish("failed", failure_message(exc, self.place), wall_start)
        finally:
            distributed.finish(self.place)
        return self._finish(status, message, wall_start)

    def _finish(self, status: str, message: str, wall_start: float) -> RunFinished:
        if status == "failed":
            self.emit(EngineError(message, recoverable=False))
        finished = RunFinished(status, self.state.step, self.state.val_loss, self.state.val_bpb,
                               time.perf_counter() - wall_start, message)
        self.emit(finished)
        return finished

    def _loop(self) -> str:
        """Steps until the decision says stop or finished; returns "stopped" or "completed"."""
        self.clock = clock = TrainingClock()
        self.window = ReportWindow(self.parts.compute.device)
        self.start_step, self.elapsed_before = self.state.step, self.state.elapsed_s
        if self.config.train.time_budget_s > 0:
            self.budget = budget_clock_for(self.parts, self.state.notes, self.place, self.budget_started_at,
                                           paused_s=lambda: clock.excluded_s(PAUSE))
        loader = self._loader()
        self.last_checkpoint_at = time.perf_counter()
        self.previous_epoch, visited, self.paused = self.state.epoch, None, False
        try:
            while True:
                decision, lr = self._decide(revisit=visited == self.state.step)
                visited = self.state.step
                if decision.evaluate:
                    self._timed_evaluate()
                if decision.save:
                    self._timed_checkpoint(decision.save)
                if decision.stop or decision.finished:
                    if self.window.steps:
                        self._report()  # the last steps' figures
                    return "stopped" if decision.stop else "completed"
                self._pause_changed(decision.pause)
                if decision.pause:
                    with clock.excluded(PAUSE):
                        time.sleep(PAUSE_POLL_S)
                    continue  # decide again: what was asked while paused counts
                self.previous_epoch = self.state.epoch
                result = self.train_step(next(loader), lr)
                try:
                    self._advance(result)
                except RollBack:
                    loader, visited = self._roll_back(loader), None
        finally:
            self.loader_wait_s = loader.wait_s
            self.train_s = clock.training_s()
            loader.close()

    # ----- the loop's parts --------------------------------------------------------------
    def _loader(self) -> BatchLoader:
        """This rank's share of each step's windows, from the current step on."""
        t = self.config.train
        return BatchLoader(self.store.train, t.batch_size * t.accumulation_steps, t.max_seq_len, t.seed,
                           start_step=self.state.step, device=self.parts.compute.device,
                           rank=self.place.rank, world_size=self.place.world_size,
                           order_version=self.state.notes.data_order, micro_batch_size=t.batch_size)

    def _decide(self, revisit: bool) -> tuple[Decision, float]:
        """This boundary's decision and the next step's learning rate: rank 0's, on every rank
        (a budget's clock and the requests are rank 0's alone)."""
        decision, lr = Decision(), 0.0
        if self.place.is_main:
            boundary = Boundary(
                step=self.state.step, start_step=self.start_step, epoch=self.state.epoch,
                previous_epoch=self.previous_epoch, since_checkpoint_s=time.perf_counter() - self.last_checkpoint_at,
                out_of_time=bool(self.budget and self.budget.out_of_time()), revisit=revisit,
            )
            decision, lr = decide(boundary, self.inbox.take(), self.parts.schedule), self._learning_rate()
        return agreed(decision, lr, self.place, self.parts.compute.device)

    def _learning_rate(self) -> float:
        t = self.config.train
        peak = t.learning_rate * self.state.notes.lr_scale  # halved by a roll-back
        if self.budget:
            return lr_at_progress(self.budget.progress(), peak, t.warmup_ratio, t.min_lr_ratio)
        return lr_at(self.state.step, self.parts.total_steps, peak, t.warmup_ratio, t.min_lr_ratio)

    def _advance(self, result: StepResult) -> None:
        """Count the step in the state and the report window; report when due. Raises RollBack
        when the bad steps in a row call for it."""
        t = self.config.train
        if result.memory_retries:
            self.recovery.micro_batch_reduced(self.state, self.train_step.micro_batch_size, result.memory_retries)
        self.state.step += 1
        self.state.tokens_seen += t.tokens_per_step
        self.state.epoch = self.state.tokens_seen / self.store.meta.train_tokens
        self.state.elapsed_s = self.elapsed_before + self.clock.training_s()
        self.window.add(result)
        if self.budget and self.budget.step_s == 0:
            # The stop decision needs a step time before the first report; reading the loss
            # makes the device finish the step, so the time is real. Later reports (which read
            # the loss anyway) keep it current.
            float(result.loss)
            self.budget.record_step(self.clock.since_lap())
        if self.state.step % t.log_interval == 0:
            self._report()
        self.recovery.step_counted(self.state, result.skipped)

    def _report(self) -> None:
        figures, seconds = self.window.take(self.place), self.clock.lap()
        if not math.isfinite(figures.loss):
            return  # every step of the window was skipped: StepSkipped events said so
        self.losses.append(figures.ce_loss)
        if self.budget and figures.steps > 1:
            self.budget.record_step(seconds / figures.steps)
        lr = self.train_step.optimizer.param_groups[0]["lr"]
        self.emit(step_metrics(figures, seconds, lr, self.parts, self.state, self.budget, self.place))

    def _roll_back(self, loader: BatchLoader) -> BatchLoader:
        """Reload the last checkpoint (at half the learning rate from now on: Recovery's note),
        and return a loader that starts at the checkpoint's step."""
        from_step = self.state.step
        loader.close()
        self.state = restore_latest(self.run_dir, self.config, self.train_step, self._log).state
        self.recovery.rolled_back(from_step, self.state)
        self.elapsed_before = self.state.elapsed_s - self.clock.training_s()  # elapsed goes on from the checkpoint's
        self.window = ReportWindow(self.parts.compute.device)
        return self._loader()

    def _pause_changed(self, paused: bool) -> None:
        """Say so when the run pauses or goes on (every rank waits out a pause in the loop,
        deciding again each PAUSE_POLL_S, so none sits in a collective past its timeout)."""
        if paused == self.paused:
            return
        self.paused = paused
        self.emit(PauseChanged(paused=paused, step=self.state.step))
        self._log("paused" if paused else "resumed")

    def _timed_evaluate(self) -> None:
        started = time.perf_counter()
        with self.clock.excluded(EVAL):
            self._evaluate()
        if self.budget:
            self.budget.measured_eval(time.perf_counter() - started)

    def _timed_checkpoint(self, reason: str) -> None:
        started = time.perf_counter()
        with self.clock.excluded(CHECKPOINT):
            self._checkpoint(reason)
        self.last_checkpoint_at = time.perf_counter()
        if self.budget:
            self.budget.checkpoint_s = self.last_checkpoint_at - started

    # ----- evaluation, checkpoints, metrics ----------------------------------------------
    def _checkpoint(self, reason: str) -> None:
        name = f"epoch_{math.floor(self.state.epoch)}" if reason == "epoch" else f"step_{self.state.step:06d}"
        notes = self.state.notes
        if self.budget is not None:
            spent = self.config.train.time_budget_s - self.budget.budget_s
            notes.budget_used_s, notes.budget_progress = spent + self.budget.used_s(), self.budget.progress()
        if self.train_step.scaler.is_enabled():
            notes.grad_scaler = dict(self.train_step.scaler.state_dict())
        if not self.place.is_main:
            return  # one copy: rank 0's (every rank holds the same weights and optimizer state)
        step, faults = self.state.step, self.train_step.faults
        try:
            # A LoRA run saves its adapters and a reference to the base (state.notes.base), not the base.
            weights = adapter_state(self.model) if self.config.lora.enabled else None
            path = save_checkpoint(self.run_dir, name, self.model, self.optimizer, self.state, self.config,
                                   model_state=weights,
                                   after_file=lambda file_name: faults.during_checkpoint(step, file_name))
        except (OSError, SafetensorError) as exc:  # safetensors reports a failed write as its own error
            self.recovery.checkpoint_failed(name, reason, exc)
            return
        prune_checkpoints(self.run_dir, self.config.train.keep_last_checkpoints)
        self.emit(CheckpointSaved(self.state.step, str(path), reason))

    def _evaluate(self) -> EvalResult | None:
        t, compute = self.config.train, self.parts.compute
        micro = self.state.notes.eval_micro_batch_size or self.train_step.micro_batch_size
        figures = evaluate_model(self.model, self.store.val, self.store.meta.val_bytes_per_token, t.max_seq_len,
                                 t.batch_size, t.eval_batches, compute.device, compute.autocast, self.place,
                                 micro_batch_size=micro, step=self.state.step,
                                 before_pass=partial(self.train_step.faults.before_eval_pass, self.state.step))
        if figures is not None and figures.micro_batch_size < (micro or t.batch_size):
            self.recovery.eval_micro_batch_reduced(self.state, figures.micro_batch_size)
        if t.clean_cuda_cache:
            release_cached_memory(compute.device)
        if figures is None:
            self._log("the validation split is too short to evaluate; raise data.val_fraction", "warning")
            return None
        self.state.val_loss, self.state.val_bpb = figures.val_loss, figures.val_bpb
        self.state.notes.eval_step = self.state.step
        if self.state.best_val_loss is None or figures.val_loss < self.state.best_val_loss:
            self.state.best_val_loss = figures.val_loss
        result = EvalResult(self.state.step, figures.val_loss, figures.val_bpb, figures.perplexity)
        self.emit(result)
        return result
