"""A training run: set-up, the loop, evaluation, checkpoints.

`Trainer(config, run_dir, emit).run()` trains and returns the RunFinished event; everything it
has to say on the way goes through `emit` as events (engine/runs/events.py). A `TrainControl`
lets another thread pause, stop, save or evaluate between optimizer steps.

The loop (`_loop`) reads top to bottom and delegates each job: the step's windows come from
the loader (a pure function of seed and step), one optimizer step is a `TrainStep`, what
happens between steps is `decide()`'s answer, and training time against pause / eval /
checkpoint time is the `TrainingClock`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil
import torch
from safetensors import SafetensorError

from engine.config import RunConfig, save_config, validate
from engine.data.embedded import EMBEDDED, corpus_origin
from engine.data.loader import DATA_ORDER_VERSION, BatchLoader
from engine.data.sources import load_documents
from engine.data.token_store import TokenStore, prepare_token_store
from engine.machine.device import ComputeSetup, release_cached_memory, setup_compute
from engine.errors import UserFacingError
from engine.model.builder import build_model
from engine.model.lora import adapter_state
from engine.model.estimates import flops_per_token, optimizer_bytes, training_memory
from engine.model.moe import expert_load_fields
from engine.machine.perf import GpuUtilization, cuda_memory_mb, matmul_peak_flops, process_ram_mb
from engine.runs.control_channel import ControlWatcher
from engine.runs.events import (
    CheckpointSaved,
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
    for_run,
)
from engine.train import distributed
from engine.train.budget_clock import DDP_EXIT_TAIL_S, EXIT_TAIL_S, BudgetClock
from engine.runs.checkpoint import (
    TrainState,
    config_hash,
    latest_name,
    load_latest,
    prune_checkpoints,
    remove_leftovers,
    restore_rng_states,
    save_checkpoint,
)
from engine.train.clock import CHECKPOINT, EVAL, PAUSE, TrainingClock
from engine.train.decision import Boundary, Decision, RequestInbox, Schedule, TrainControl, decide
from engine.train.evaluate import evaluate_model
from engine.train.faults import FaultPlan, OutOfMemoryAtOneWindow
from engine.train.init_from import base_problems, base_reference, load_base_weights, load_model_weights, resolve_base
from engine.train.optimizers import build_optimizer
from engine.train.report_window import ReportWindow
from engine.train.schedule import lr_at, lr_at_progress
from engine.train.step import StepResult, TrainStep

__all__ = ["Trainer", "TrainControl", "TrainingError", "total_steps_for"]

PAUSE_POLL_S = 0.1  # how often a paused run looks for resume / stop


def float_bits(value: float) -> int:
    """A float64 as the int64 with the same bits (so it crosses an int broadcast exactly)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


class TrainingError(UserFacingError):
    """Training cannot start or go on; the message says why and what to change."""


class RollBack(Exception):
    """Raised inside the loop: go back to the last checkpoint (see Trainer._bad_step)."""


def total_steps_for(config: RunConfig, train_tokens: int) -> int:
    """max_steps when set, else enough steps for num_epochs passes over the training tokens."""
    t = config.train
    if t.max_steps:
        return t.max_steps
    return max(1, math.ceil(t.num_epochs * train_tokens / t.tokens_per_step))


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
        self.config, self.run_dir = config, Path(run_dir)
        self.place = distributed.from_environment()
        self._emit_to = emit
        self.control = control or TrainControl()
        self.resume, self.threads = resume, threads
        # With train.time_budget_s: the wall-clock time (time.time()) the budget counts from
        # (the CLI passes its process's start); None means when run() is called.
        self.budget_started_at = budget_started_at
        self.model_builder = model_builder
        self.budget: BudgetClock | None = None
        self.state = TrainState()
        # Mean cross-entropy of each reported window (every step when log_interval=1).
        self.losses: list[float] = []
        self.loader_wait_s = 0.0
        self.train_s = 0.0

    # ----- setup -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Pass an event on, stamped with its run (so a screen can ignore other runs'). Under DDP
        rank 0 speaks for the run; the other ranks pass on only their errors."""
        if self.place.is_main or isinstance(event, EngineError):
            self._emit_to(for_run(event, str(self.run_dir)))

    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(level, text))

    def _setup(self) -> None:
        problems = validate(self.config, cuda_available=torch.cuda.is_available())
        if problems:
            raise TrainingError("the config has problems:\n" + "\n".join(f"  - {p}" for p in problems))
        c, t = self.config, self.config.train
        # A fine-tune's base is checked before any time goes into data (fail with its name first).
        # A resumed full fine-tune has its weights in its own checkpoints; a LoRA run needs its base.
        needs_base = bool(t.init_from) and (not self.resume or c.lora.enabled)
        self.base = resolve_base(t.init_from) if needs_base else None
        if self.base is not None:
            problems = base_problems(c, self.base)
            if problems:
                raise TrainingError(f"cannot start from {t.init_from}: " + "; ".join(problems) + ".")
            # The record names the exact checkpoint and its hash (init_from may name a run directory).
            c = self.config = dataclasses.replace(c, train=dataclasses.replace(
                t, init_from=str(self.base.checkpoint), init_from_sha256=self.base.sha256))
            t = c.train
        self.compute: ComputeSetup = setup_compute(t.use_dtype, self.threads)
        distributed.start(self.place, self.compute.device)
        ranks = f", {self.place.world_size} processes (DDP)" if self.place.enabled else ""
        self._log(f"device {self.compute.device}, {self.compute.dtype_name}, {self.compute.threads} CPU threads{ranks}")
        self._check_split()
        self._prepare_data()
        if self.place.enabled:  # the record says how it really ran (a resume may use another count)
            here = int(os.environ.get("LOCAL_WORLD_SIZE", self.place.world_size))
            c = self.config = dataclasses.replace(c, train=dataclasses.replace(t, processes=here))
        if self.place.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not (self.run_dir / "tokenizer").exists():
                shutil.copytree(self.store.directory / "tokenizer", self.run_dir / "tokenizer")
            save_config(c, self.run_dir / "config.toml", header="The full resolved config this run used.")

        # A LoRA model comes out of the builder with every base weight frozen, so the optimizer
        # below holds the adapters alone.
        lora = {"lora": c.lora} if c.lora.enabled else {}
        self.model = self.model_builder(c.model, self.compute.device, seed=t.seed,
                                 gradient_checkpointing=t.gradient_checkpointing, **lora)
        if self.base is not None and not self.resume:
            load_base_weights(self.model, self.base.checkpoint)
        self.optimizer = build_optimizer(self.model, c, self.compute.device)
        self.state = TrainState(config_hash=config_hash(c), extra={"data_order": DATA_ORDER_VERSION})
        if self.base is not None:
            self.state.extra["base"] = base_reference(c)
        self.train_step = TrainStep(self.model, self.optimizer, self.compute, t.grad_clip, t.batch_size,
                                    faults=FaultPlan.from_environment(self.place.rank), ranks=self.place)
        if self.resume:
            if self.place.is_main:
                for path in remove_leftovers(self.run_dir):
                    self._log(f"removed {path.name}, a checkpoint a stopped process left half-written")
            self._restore()
        # A micro-batch that was halved for memory stays halved (no point hitting the wall again).
        self.train_step.micro_batch_size = min(t.batch_size, self.state.extra.get("micro_batch_size", t.batch_size))
        distributed.broadcast_parameters(self.model, self.place)
        if t.use_compile:
            self.train_step.forward = torch.compile(self.model)
        self.total_steps = total_steps_for(c, self.store.meta.train_tokens)
        self.flops_per_token = flops_per_token(c.model, t.max_seq_len)
        self.peak_flops = matmul_peak_flops(self.compute.device.type, self.compute.autocast_dtype or torch.float32)
        self.gpu = GpuUtilization(self.compute.device)

    def _check_split(self) -> None:
        t, ranks = self.config.train, self.place.world_size
        windows = t.batch_size * t.accumulation_steps
        if windows % ranks:
            raise TrainingError(
                f"a step's {windows} windows (train.batch_size x train.accumulation_steps) do not split evenly "
                f"over {ranks} processes; make batch_size x accumulation_steps a multiple of {ranks}."
            )

    def _prepare_data(self) -> None:
        c = self.config
        started = time.perf_counter()
        # One process per machine tokenises into the shared cache first; the rest read it.
        first = self.place.local_rank == 0
        if not first:
            self.place.barrier()
        dataset = load_documents(c.data)
        self.store: TokenStore = prepare_token_store(dataset, c.data)
        if first:
            self.place.barrier()
        how = "from cache" if self.store.from_cache else f"in {time.perf_counter() - started:.1f} s"
        origin = f" ({corpus_origin()})" if c.data.source in EMBEDDED else ""
        meta = self.store.meta
        self._log(
            f"data: {c.data.source}{origin}: {meta.train_tokens:,} train / {meta.val_tokens:,} val tokens "
            f"({meta.train_documents} / {meta.val_documents} documents), prepared {how}"
        )
        self._check_vocab()

    def _check_vocab(self) -> None:
        tokens, model = self.store.meta.vocab_size, self.config.model.vocab_size
        if tokens > model:
            raise TrainingError(
                f"the tokenizer has {tokens} tokens but model.vocab_size is {model}; "
                f"set model.vocab_size = {tokens}."
            )
        # A fine-tune's tokenizer is its base's, and so is the vocabulary size it kept (a BPE that
        # came out smaller than asked leaves the base's unused rows; they stay unused here).
        if tokens < model and self.config.data.tokenizer != "bpe" and not self.config.train.init_from:
            raise TrainingError(
                f"the tokenizer ({self.config.data.tokenizer}) has {tokens} tokens but model.vocab_size is "
                f"{model}; set model.vocab_size = {tokens}."
            )
        if tokens < model and not self.config.train.init_from:
            self._log(f"the corpus supported only {tokens} BPE tokens of the {model} asked for; "
                      "the model keeps its size (unused rows stay untrained)", "warning")

    def _restore(self, quiet: bool = False) -> None:
        checkpoint = load_latest(self.run_dir, map_location=self.compute.device)
        load_model_weights(self.model, self.config, checkpoint)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        restore_rng_states(checkpoint.rng_state)
        if checkpoint.state.extra.get("grad_scaler"):
            self.train_step.scaler.load_state_dict(checkpoint.state.extra["grad_scaler"])
        if checkpoint.state.config_hash and checkpoint.state.config_hash != self.state.config_hash:
            self._log("the model, data or data order settings differ from the ones the checkpoint was trained "
                      "with; the run goes on with the new ones", "warning")
        self.state = checkpoint.state
        self.state.config_hash = config_hash(self.config)
        # Checkpoints from before the step-keyed data order have no version: they keep their order.
        self.state.extra.setdefault("data_order", 1)
        if not quiet:
            self._log(f"resumed from {checkpoint.path.name} at step {self.state.step}")

    # ----- the run -----------------------------------------------------------------------
    def run(self) -> RunFinished:
        """Train to the end (or until stopped); returns the RunFinished event it also emitted."""
        wall_start = time.perf_counter()
        # Requests from other processes (RUN_DIR/control.jsonl) count from now, set-up included,
        # and so does a time budget unless the caller started its clock earlier.
        # Rank 0 alone reads requests; its decisions reach the other ranks (see _decide).
        watcher = ControlWatcher(self.run_dir) if self.place.is_main else None
        self.inbox = RequestInbox(self.control, watcher, self._log)
        self.budget_started_at = self.budget_started_at or time.time()
        try:
            self._setup()
            self.emit(RunStarted(
                run_dir=str(self.run_dir), params=self.model.num_parameters(), total_steps=self.total_steps,
                active_params=self.model.num_active_parameters(),
                trainable_params=self.model.num_trainable_parameters(),
                init_from=self.config.train.init_from, init_from_sha256=self.config.train.init_from_sha256,
                tokens_per_step=self.config.train.tokens_per_step, start_step=self.state.step,
                device=str(self.compute.device), dtype=self.compute.dtype_name, threads=self.compute.threads,
                pid=os.getpid(), pid_started=psutil.Process().create_time(), host=socket.gethostname(),
                time_budget_s=self.config.train.time_budget_s,
            ))
            status = self._loop()
            if self.state.val_loss is None or self.state.extra.get("eval_step") != self.state.step:
                self._evaluate()
            self._checkpoint("final" if status == "completed" else "stop")
            # Ranks leave together: one tearing its connections down while rank 0 still writes
            # the final checkpoint made the other abort at exit (seen with the laptop preset).
            self.place.barrier()
            message = "" if status == "completed" else "stopped on request; resume continues from here"
        except OutOfMemoryAtOneWindow as exc:
            return self._fail(self._out_of_memory_at_one(exc), wall_start)
        except (TrainingError, ValueError, OSError) as exc:
            return self._fail(str(exc), wall_start)
        except distributed.DIST_ERRORS as exc:
            return self._fail(distributed.explain(exc, self.place), wall_start)
        except Exception as exc:  # an engine bug: report it, never kill the caller's thread
            if self.place.enabled and any(word in str(exc).lower() for word in ("gloo", "nccl")):
                return self._fail(distributed.explain(exc, self.place), wall_start)
            return self._fail(f"{exc.__class__.__name__}: {exc}", wall_start)
        finally:
            distributed.finish(self.place)
        finished = RunFinished(status, self.state.step, self.state.val_loss, self.state.val_bpb,
                               time.perf_counter() - wall_start, message)
        self.emit(finished)
        return finished

    def _out_of_memory_at_one(self, exc: OutOfMemoryAtOneWindow) -> str:
        """Save what the run has (the last complete step) and say what would fit."""
        saved = "; the last complete step is checkpointed"
        try:
            self._checkpoint("out of memory")
        except Exception:  # a disk as full as the memory: the previous checkpoint stays the latest
            saved = "; no checkpoint could be written now, the previous one is intact"
        t = self.config.train
        one = training_memory(self.config.model, dataclasses.replace(t, batch_size=1),
                              device_type=self.compute.device.type)
        where = f"step {exc.step}" if exc.where == "step" else f"the evaluation after step {exc.step}"
        return (f"out of memory at {where} even with one window per micro-batch{saved}. One window "
                f"needs about {one.total / 2**20:,.0f} MiB by the estimate (weights {one.weights / 2**20:,.0f}, "
                f"optimizer {one.optimizer / 2**20:,.0f}, activations {one.activations / 2**20:,.0f}); turn on "
                f"train.gradient_checkpointing, shorten train.max_seq_len (now {t.max_seq_len}), or use a smaller model.")

    def _fail(self, message: str, wall_start: float) -> RunFinished:
        self.emit(EngineError(message, recoverable=False))
        finished = RunFinished("failed", self.state.step, self.state.val_loss, self.state.val_bpb,
                               time.perf_counter() - wall_start, message)
        self.emit(finished)
        return finished

    def _loop(self) -> str:
        """Steps until the decision says stop or finished; returns "stopped" or "completed"."""
        t = self.config.train
        self.clock = clock = TrainingClock()
        self.window = ReportWindow(self.compute.device)
        self.start_step, self.elapsed_before = self.state.step, self.state.elapsed_s
        self.budget = self._budget_clock() if t.time_budget_s > 0 else None
        loader = self._loader()
        self.last_checkpoint_at = time.perf_counter()
        self.previous_epoch, visited, self.paused, self.bad_in_a_row = self.state.epoch, None, False, 0
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
                           start_step=self.state.step, device=self.compute.device,
                           rank=self.place.rank, world_size=self.place.world_size,
                           order_version=self.state.extra["data_order"], micro_batch_size=t.batch_size)

    def _decide(self, revisit: bool) -> tuple[Decision, float]:
        """This boundary's decision and the next step's learning rate: rank 0's, on every rank
        (a budget's clock and the requests are rank 0's alone)."""
        decision, lr = Decision(), 0.0
        if self.place.is_main:
            decision, lr = self._decide_here(revisit), self._learning_rate()
        values = self.place.broadcast_ints([*decision.encode(), float_bits(lr)], self.compute.device)
        return Decision.decode(values[:-1]), bits_float(values[-1])

    def _decide_here(self, revisit: bool) -> Decision:
        t = self.config.train
        schedule = Schedule(
            total_steps=None if self.budget else self.total_steps, eval_interval=t.eval_interval,
            checkpoint_every_steps=t.checkpoint_every_steps, checkpoint_every_s=60 * t.checkpoint_every_minutes,
            epoch_checkpoints=t.use_epoch_checkpoints,
        )
        boundary = Boundary(
            step=self.state.step, start_step=self.start_step, epoch=self.state.epoch,
            previous_epoch=self.previous_epoch, since_checkpoint_s=time.perf_counter() - self.last_checkpoint_at,
            out_of_time=bool(self.budget and self.budget.out_of_time()), revisit=revisit,
        )
        return decide(boundary, self.inbox.take(), schedule)

    def _learning_rate(self) -> float:
        t = self.config.train
        peak = t.learning_rate * self.state.extra.get("lr_scale", 1.0)  # halved by a roll-back
        if self.budget:
            return lr_at_progress(self.budget.progress(), peak, t.warmup_ratio, t.min_lr_ratio)
        return lr_at(self.state.step, self.total_steps, peak, t.warmup_ratio, t.min_lr_ratio)

    def _advance(self, result: StepResult) -> None:
        """Count the step in the state and the report window; report when due."""
        t = self.config.train
        if result.memory_retries:
            self._micro_batch_reduced(result.memory_retries, "step")
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
        if result.skipped:
            self._bad_step()
        else:
            self.bad_in_a_row = 0

    def _report(self) -> None:
        figures = self.window.take(self.place)
        seconds = self.clock.lap()
        if not math.isfinite(figures.loss):
            return  # every step of the window was skipped: StepSkipped events said so
        self.losses.append(figures.ce_loss)
        if self.budget and figures.steps > 1:
            self.budget.record_step(seconds / figures.steps)
        tokens_per_s = figures.steps * self.config.train.tokens_per_step / max(seconds, 1e-9)
        # The reported and plotted loss is the cross-entropy, comparable with val_loss; an
        # auxiliary balancing loss is reported on its own.
        m = self.config.model
        aux = figures.loss - figures.ce_loss if m.use_moe and not m.use_lossfreebalance else None
        self._emit_metrics(figures.ce_loss, self.train_step.optimizer.param_groups[0]["lr"], figures.grad_norm,
                           tokens_per_s, seconds / max(1, figures.steps),
                           aux_loss=aux, **expert_load_fields(figures.extra))

    def _micro_batch_reduced(self, times: int, where: str) -> None:
        size = self.train_step.micro_batch_size
        self.state.extra["micro_batch_size"] = size
        self.state.extra["memory_retries"] = self.state.extra.get("memory_retries", 0) + times
        self.emit(MicroBatchReduced(self.state.step + 1, size, self.state.extra["memory_retries"], where))
        self._log(f"out of memory at step {self.state.step + 1}: the micro-batch is now {size} windows "
                  f"({self.config.train.batch_size * self.config.train.accumulation_steps} per step, as before)", "warning")

    def _bad_step(self) -> None:
        """A skipped step. Too many in a row: back to the last checkpoint at half the rate, once."""
        self.bad_in_a_row += 1
        self.state.extra["skipped_steps"] = self.state.extra.get("skipped_steps", 0) + 1
        self.emit(StepSkipped(self.state.step, self.bad_in_a_row, self.state.extra["skipped_steps"]))
        if self.bad_in_a_row < self.config.train.max_bad_steps:
            return
        advice = ("lower train.learning_rate, keep train.grad_clip on, or use bfloat16 instead of float16; "
                  "the last checkpoint is intact")
        if self.state.extra.get("rolled_back"):
            raise TrainingError(f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradients again, by "
                                f"step {self.state.step}, after going back once at half the learning rate; {advice}.")
        if latest_name(self.run_dir) is None:
            raise TrainingError(f"the first {self.state.step} steps had a non-finite loss or gradients and there is "
                                f"no checkpoint to go back to; {advice}.")
        raise RollBack()

    def _roll_back(self, loader: BatchLoader) -> BatchLoader:
        """Reload the last checkpoint, halve the learning rate for the rest of the run, and
        return a loader that starts at the checkpoint's step."""
        from_step = self.state.step
        loader.close()
        self._restore(quiet=True)
        self.state.extra["rolled_back"] = True
        self.state.extra["lr_scale"] = self.state.extra.get("lr_scale", 1.0) * 0.5
        self.bad_in_a_row = 0
        self.elapsed_before = self.state.elapsed_s - self.clock.training_s()  # elapsed goes on from the checkpoint's
        self.window = ReportWindow(self.compute.device)
        self.emit(RolledBack(from_step, self.state.step, self.state.extra["lr_scale"]))
        self._log(f"{self.config.train.max_bad_steps} bad steps in a row by step {from_step}: went back to step "
                  f"{self.state.step} with the learning rate x{self.state.extra['lr_scale']:g}", "warning")
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

    def _budget_clock(self) -> BudgetClock:
        """The clock a budgeted run stops by; a resumed run gets what its budget has left.
        Pauses do not spend the budget: its clock is wall time less the time paused."""
        t, extra = self.config.train, self.state.extra
        checkpoint_bytes = 4 * self.model.num_parameters() + optimizer_bytes(self.config.model, t.optimizer)
        return BudgetClock(
            budget_s=t.time_budget_s - extra.get("budget_used_s", 0.0),
            started_at=self.budget_started_at,
            clock=lambda: time.time() - self.clock.excluded_s(PAUSE),
            start_progress=extra.get("budget_progress", 0.0),
            eval_in_steps=0.5 * t.eval_batches / t.accumulation_steps,
            checkpoint_s=0.1 + checkpoint_bytes / 200e6,  # until one has been timed
            exit_tail_s=DDP_EXIT_TAIL_S if self.place.enabled else EXIT_TAIL_S,
        )

    # ----- evaluation, checkpoints, metrics ----------------------------------------------
    def _checkpoint(self, reason: str) -> None:
        if reason == "epoch":
            name = f"epoch_{math.floor(self.state.epoch)}"
        else:
            name = f"step_{self.state.step:06d}"
        if self.budget is not None:
            spent = self.config.train.time_budget_s - self.budget.budget_s
            self.state.extra["budget_used_s"] = spent + self.budget.used_s()
            self.state.extra["budget_progress"] = self.budget.progress()
        if self.train_step.scaler.is_enabled():
            self.state.extra["grad_scaler"] = dict(self.train_step.scaler.state_dict())
        if not self.place.is_main:
            return  # one copy: rank 0's (every rank holds the same weights and optimizer state)
        step, faults = self.state.step, self.train_step.faults
        try:
            # A LoRA run saves its adapters and a reference to the base (state.extra["base"]), not the base.
            weights = adapter_state(self.model) if self.config.lora.enabled else None
            path = save_checkpoint(self.run_dir, name, self.model, self.optimizer, self.state, self.config,
                                   model_state=weights,
                                   after_file=lambda file_name: faults.during_checkpoint(step, file_name))
        except (OSError, SafetensorError) as exc:  # safetensors reports a failed write as its own error
            self._checkpoint_failed(name, reason, exc)
            return
        prune_checkpoints(self.run_dir, self.config.train.keep_last_checkpoints)
        self.emit(CheckpointSaved(self.state.step, str(path), reason))

    def _checkpoint_failed(self, name: str, reason: str, exc: Exception) -> None:
        """A full disk or a read-only folder: the previous checkpoint stays the latest. Training
        goes on (the next save tries again) unless this was the run's last checkpoint."""
        latest = latest_name(self.run_dir)
        kept = f"{latest} is intact and stays the latest" if latest else "there is no earlier checkpoint"
        sentence = (f"could not write checkpoint {name} in {self.run_dir / 'checkpoints'}: "
                    f"{getattr(exc, 'strerror', None) or exc} (a full disk or a read-only folder?); {kept}")
        if reason in ("final", "stop", "out of memory"):
            raise TrainingError(f"{sentence}; free space (or fix the folder) and `lightlm-tui resume {self.run_dir}`"
                                " continues from the latest checkpoint.")
        self._log(f"{sentence}; training goes on and the next save tries again", "warning")

    def _emit_metrics(self, loss: float, lr: float, grad_norm: float, tokens_per_s: float, step_s: float,
                      **model_figures: object) -> None:
        # The largest memory of any rank: the one that would run out first.
        ram, vram, vram_reserved, vram_peak = self.place.max_floats(
            [process_ram_mb(), *cuda_memory_mb(self.compute.device)], self.compute.device)
        if self.budget is not None:
            eta_s, progress = self.budget.remaining_s(), self.budget.progress()
        else:
            eta_s, progress = (self.total_steps - self.state.step) * step_s, self.state.step / self.total_steps
        self.emit(StepMetrics(
            step=self.state.step, epoch=self.state.epoch, loss=loss, lr=lr, grad_norm=grad_norm,
            tokens_per_s=tokens_per_s, mfu=tokens_per_s * self.flops_per_token / self.peak_flops,
            ram_mb=ram, vram_mb=vram, vram_reserved_mb=vram_reserved, vram_peak_mb=vram_peak,
            gpu_util=self.gpu.percent(),
            eta_s=eta_s, elapsed_s=self.state.elapsed_s, progress=progress, **model_figures,
        ))

    def _evaluate(self) -> EvalResult | None:
        t = self.config.train
        micro = self.state.extra.get("eval_micro_batch_size") or self.train_step.micro_batch_size
        figures = evaluate_model(self.model, self.store.val, self.store.meta.val_bytes_per_token, t.max_seq_len,
                                 t.batch_size, t.eval_batches, self.compute.device, self.compute.autocast, self.place,
                                 micro_batch_size=micro, step=self.state.step,
                                 before_pass=partial(self.train_step.faults.before_eval_pass, self.state.step))
        if figures is not None and figures.micro_batch_size < (micro or t.batch_size):
            self.state.extra["eval_micro_batch_size"] = figures.micro_batch_size
            self.state.extra["memory_retries"] = self.state.extra.get("memory_retries", 0) + 1
            self.emit(MicroBatchReduced(self.state.step, figures.micro_batch_size,
                                        self.state.extra["memory_retries"], "eval"))
        if t.clean_cuda_cache:
            release_cached_memory(self.compute.device)
        if figures is None:
            self._log("the validation split is too short to evaluate; raise data.val_fraction", "warning")
            return None
        self.state.val_loss, self.state.val_bpb = figures.val_loss, figures.val_bpb
        self.state.extra["eval_step"] = self.state.step
        if self.state.best_val_loss is None or figures.val_loss < self.state.best_val_loss:
            self.state.best_val_loss = figures.val_loss
        result = EvalResult(self.state.step, figures.val_loss, figures.val_bpb, figures.perplexity)
        self.emit(result)
        return result
