"""Setting a run up: everything its loop needs, built once, with the config checked first.

`set_up_run(...)` checks the config (and a fine-tune's base, before any time goes into data),
joins the DDP process group, prepares the data (one process per machine tokenises), records
the config as the run really runs, builds the model, the optimizer and the optimizer step,
and on resume puts the latest checkpoint back (`restore_latest`, which a roll-back uses too).
It returns a `RunParts`; the trainer reads every part from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from engine.config import RunConfig, validate
from engine.data.embedded import EMBEDDED, corpus_origin
from engine.data.sources import load_documents
from engine.data.token_store import TokenStore, prepare_token_store
from engine.machine.device import ComputeSetup, setup_compute
from engine.machine.perf import GpuUtilization, matmul_peak_flops
from engine.model.builder import build_model
from engine.model.estimates import flops_per_token, optimizer_bytes
from engine.runs.checkpoint import (
    Checkpoint,
    RunNotes,
    TrainState,
    config_hash,
    load_latest,
    remove_leftovers,
    restore_rng_states,
)
from engine.runs.events import Event, RunStarted
from engine.runs.run_dir import write_run_config
from engine.train import distributed
from engine.train.budget_clock import DDP_EXIT_TAIL_S, EXIT_TAIL_S, BudgetClock
from engine.train.decision import Schedule
from engine.train.distributed import Distributed
from engine.train.errors import TrainingError
from engine.train.faults import FaultPlan
from engine.train.init_from import (
    BaseWeights,
    base_problems,
    base_reference,
    load_base_weights,
    load_model_weights,
    resolve_base,
)
from engine.train.optimizers import build_optimizer
from engine.train.step import TrainStep

Log = Callable[..., None]  # log(text, level="info"), as the trainer's


@dataclass
class RunParts:
    """What set-up builds: the parts one run trains with."""

    config: RunConfig  # as recorded in RUN_DIR/config.toml: init_from resolved, processes as they ran
    compute: ComputeSetup
    store: TokenStore
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_step: TrainStep
    state: TrainState  # a fresh run's, or on resume the latest checkpoint's
    total_steps: int  # what a run without a time budget trains to (total_steps_for)
    schedule: Schedule  # when evaluations and checkpoints fall due, and when the run ends
    flops_per_token: float
    peak_flops: float  # this device's measured matmul FLOP/s in the training dtype: MFU divides by it
    gpu: GpuUtilization
    base: BaseWeights | None  # the weights a fine-tune starts from (None: from scratch, or a resumed full fine-tune)

    def started(self, run_dir: Path) -> RunStarted:
        """The event that says what this run is and where it starts."""
        t = self.config.train
        return RunStarted(
            run_dir=str(run_dir), params=self.model.num_parameters(), total_steps=self.total_steps,
            active_params=self.model.num_active_parameters(), trainable_params=self.model.num_trainable_parameters(),
            init_from=t.init_from, init_from_sha256=t.init_from_sha256, tokens_per_step=t.tokens_per_step,
            start_step=self.state.step, device=str(self.compute.device), dtype=self.compute.dtype_name,
            threads=self.compute.threads, pid=os.getpid(), pid_started=psutil.Process().create_time(),
            host=socket.gethostname(), time_budget_s=t.time_budget_s,
        )


def total_steps_for(config: RunConfig, train_tokens: int) -> int:
    """max_steps when set, else enough steps for num_epochs passes over the training tokens."""
    t = config.train
    if t.max_steps:
        return t.max_steps
    return max(1, math.ceil(t.num_epochs * train_tokens / t.tokens_per_step))


def set_up_run(config: RunConfig, run_dir: Path, place: Distributed, log: Log, resume: bool = False,
               threads: int | None = None, model_builder: Callable[..., torch.nn.Module] = build_model,
               emit: Callable[[Event], None] | None = None) -> RunParts:
    """Everything the loop needs (see the module docstring); raises TrainingError with what to
    change when the run cannot start. `model_builder` has engine.model.builder.build_model's
    signature; `emit` hears the data preparation's progress."""
    problems = validate(config, cuda_available=torch.cuda.is_available())
    if problems:
        raise TrainingError("the config has problems:\n" + "\n".join(f"  - {p}" for p in problems))
    c, t = config, config.train
    # A fine-tune's base is checked before any time goes into data (fail with its name first).
    # A resumed full fine-tune has its weights in its own checkpoints; a LoRA run needs its base.
    needs_base = bool(t.init_from) and (not resume or c.lora.enabled)
    base = resolve_base(t.init_from) if needs_base else None
    if base is not None:
        problems = base_problems(c, base)
        if problems:
            raise TrainingError(f"cannot start from {t.init_from}: " + "; ".join(problems) + ".")
        # The record names the exact checkpoint and its hash (init_from may name a run directory).
        c = dataclasses.replace(c, train=dataclasses.replace(
            t, init_from=str(base.checkpoint), init_from_sha256=base.sha256))
        t = c.train
    compute = setup_compute(t.use_dtype, threads)
    distributed.start(place, compute.device)
    ranks = f", {place.world_size} processes (DDP)" if place.enabled else ""
    log(f"device {compute.device}, {compute.dtype_name}, {compute.threads} CPU threads{ranks}")
    _check_split(c, place)
    store = _prepare_data(c, place, log, emit)
    if place.enabled:  # the record says how it really ran (a resume may use another count)
        here = int(os.environ.get("LOCAL_WORLD_SIZE", place.world_size))
        c = dataclasses.replace(c, train=dataclasses.replace(t, processes=here))
        t = c.train
    if place.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "tokenizer").exists():
            shutil.copytree(store.directory / "tokenizer", run_dir / "tokenizer")
        write_run_config(run_dir, c)

    # A LoRA model comes out of the builder with every base weight frozen, so the optimizer
    # below holds the adapters alone.
    lora = {"lora": c.lora} if c.lora.enabled else {}
    model = model_builder(c.model, compute.device, seed=t.seed, gradient_checkpointing=t.gradient_checkpointing,
                          **lora)
    if base is not None and not resume:
        load_base_weights(model, base.checkpoint)
    optimizer = build_optimizer(model, c, compute.device)
    state = TrainState(config_hash=config_hash(c), notes=RunNotes(base=base_reference(c) if base is not None else {}))
    train_step = TrainStep(model, optimizer, compute, t.grad_clip, t.batch_size,
                           faults=FaultPlan.from_environment(place.rank), ranks=place)
    if resume:
        if place.is_main:
            for path in remove_leftovers(run_dir):
                log(f"removed {path.name}, a checkpoint a stopped process left half-written")
        checkpoint = restore_latest(run_dir, c, train_step, log)
        state = checkpoint.state
        log(f"resumed from {checkpoint.path.name} at step {state.step}")
    # A micro-batch that was halved for memory stays halved (no point hitting the wall again).
    train_step.micro_batch_size = min(t.batch_size, state.notes.micro_batch_size or t.batch_size)
    distributed.broadcast_parameters(model, place)
    if t.use_compile:
        train_step.forward = torch.compile(model)
    total_steps = total_steps_for(c, store.meta.train_tokens)
    schedule = Schedule(
        total_steps=None if t.time_budget_s > 0 else total_steps, eval_interval=t.eval_interval,
        checkpoint_every_steps=t.checkpoint_every_steps, checkpoint_every_s=60 * t.checkpoint_every_minutes,
        epoch_checkpoints=t.use_epoch_checkpoints,
    )
    return RunParts(
        config=c, compute=compute, store=store, model=model, optimizer=optimizer, train_step=train_step,
        state=state, total_steps=total_steps, schedule=schedule,
        flops_per_token=flops_per_token(c.model, t.max_seq_len),
        peak_flops=matmul_peak_flops(compute.device.type, compute.autocast_dtype or torch.float32),
        gpu=GpuUtilization(compute.device), base=base,
    )


def restore_latest(run_dir: Path, config: RunConfig, train_step: TrainStep, log: Log) -> Checkpoint:
    """Put the latest checkpoint back into the step's model, optimizer and loss scaler, and the
    RNG; returns it, its state carrying `config`'s hash from now on."""
    checkpoint = load_latest(run_dir, map_location=train_step.compute.device)
    load_model_weights(train_step.model, config, checkpoint)
    train_step.optimizer.load_state_dict(checkpoint.optimizer_state)
    restore_rng_states(checkpoint.rng_state)
    if checkpoint.state.notes.grad_scaler:
        train_step.scaler.load_state_dict(checkpoint.state.notes.grad_scaler)
    ours = config_hash(config)
    if checkpoint.state.config_hash and checkpoint.state.config_hash != ours:
        log("the model, data or data order settings differ from the ones the checkpoint was trained "
            "with; the run goes on with the new ones", "warning")
    checkpoint.state.config_hash = ours
    return checkpoint


def budget_clock_for(parts: RunParts, notes: RunNotes, place: Distributed, started_at: float,
                     paused_s: Callable[[], float]) -> BudgetClock:
    """The clock a budgeted run stops by; a resumed run gets what its budget has left (by its
    `notes`). Pauses (`paused_s()` so far) do not spend the budget: its clock is wall time less
    the time paused."""
    t = parts.config.train
    checkpoint_bytes = 4 * parts.model.num_parameters() + optimizer_bytes(parts.config.model, t.optimizer)
    return BudgetClock(
        budget_s=t.time_budget_s - notes.budget_used_s,
        started_at=started_at,
        clock=lambda: time.time() - paused_s(),
        start_progress=notes.budget_progress,
        eval_in_steps=0.5 * t.eval_batches / t.accumulation_steps,
        checkpoint_s=0.1 + checkpoint_bytes / 200e6,  # until one has been timed
        exit_tail_s=DDP_EXIT_TAIL_S if place.enabled else EXIT_TAIL_S,
    )


def _check_split(config: RunConfig, place: Distributed) -> None:
    t, ranks = config.train, place.world_size
    windows = t.batch_size * t.accumulation_steps
    if windows % ranks:
        raise TrainingError(
            f"a step's {windows} windows (train.batch_size x train.accumulation_steps) do not split evenly "
            f"over {ranks} processes; make batch_size x accumulation_steps a multiple of {ranks}."
        )


def _prepare_data(config: RunConfig, place: Distributed, log: Log,
                  emit: Callable[[Event], None] | None) -> TokenStore:
    started = time.perf_counter()
    # One process per machine tokenises into the shared cache first; the rest read it.
    first = place.local_rank == 0
    if not first:
        place.barrier()
    dataset = load_documents(config.data)
    store = prepare_token_store(dataset, config.data, on_progress=emit)
    if first:
        place.barrier()
    how = "from cache" if store.from_cache else f"in {time.perf_counter() - started:.1f} s"
    origin = f" ({corpus_origin()})" if config.data.source in EMBEDDED else ""
    meta = store.meta
    log(
        f"data: {config.data.source}{origin}: {meta.train_tokens:,} train / {meta.val_tokens:,} val tokens "
        f"({meta.train_documents} / {meta.val_documents} documents), prepared {how}"
    )
    _check_vocab(config, meta.vocab_size, log)
    return store


def _check_vocab(config: RunConfig, tokens: int, log: Log) -> None:
    model = config.model.vocab_size
    if tokens > model:
        raise TrainingError(
            f"the tokenizer has {tokens} tokens but model.vocab_size is {model}; set model.vocab_size = {tokens}."
        )
    # A fine-tune's tokenizer is its base's, and so is the vocabulary size it kept (a BPE that
    # came out smaller than asked leaves the base's unused rows; they stay unused here).
    if tokens < model and config.data.tokenizer != "bpe" and not config.train.init_from:
        raise TrainingError(
            f"the tokenizer ({config.data.tokenizer}) has {tokens} tokens but model.vocab_size is "
            f"{model}; set model.vocab_size = {tokens}."
        )
    if tokens < model and not config.train.init_from:
        log(f"the corpus supported only {tokens} BPE tokens of the {model} asked for; "
            "the model keeps its size (unused rows stay untrained)", "warning")
