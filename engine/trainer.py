"""The training loop: data, model, optimizer, schedule, precision, evaluation, checkpoints.

`Trainer(config, run_dir, emit).run()` trains and returns the RunFinished event; everything it
has to say on the way goes through `emit` as events (engine/events.py). A `TrainControl`
lets another thread pause, stop, save or evaluate between optimizer steps.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from engine.checkpoint import (
    TrainState,
    config_hash,
    load_latest,
    prune_checkpoints,
    restore_rng_states,
    save_checkpoint,
)
from engine.budget_clock import BudgetClock
from engine.config import RunConfig, save_config, validate
from engine.control_channel import CONTROL_FILE, ControlWatcher, apply_request
from engine.data.embedded import EMBEDDED, corpus_origin
from engine.data.loader import BatchLoader
from engine.data.sources import load_documents
from engine.data.token_store import TokenStore, prepare_token_store
from engine.errors import UserFacingError
from engine.device import ComputeSetup, bf16_supported, setup_compute
from engine.estimates import flops_per_token, optimizer_bytes
from engine.evaluate import evaluate_model
from engine.events import (
    CheckpointSaved,
    EngineError,
    EvalResult,
    Event,
    LogLine,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from engine.model import Transformer
from engine.muon import MuonAdamW
from engine.perf import GpuUtilization, cuda_memory_mb, matmul_peak_flops, process_ram_mb
from engine.schedule import lr_at, lr_at_progress


class TrainingError(UserFacingError):
    """Training cannot start or go on; the message says why and what to change."""


@dataclass
class TrainControl:
    """Requests from another thread, honoured between optimizer steps."""

    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)
    save_now: threading.Event = field(default_factory=threading.Event)
    eval_now: threading.Event = field(default_factory=threading.Event)


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """The configured optimizer, with weight decay on matrices only (not norms).

    AdamW uses fused kernels on CUDA. Muon takes the hidden matrices; the token embedding
    (also the tied output head) and the norms stay with AdamW (see engine/muon.py)."""
    t = config.train
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    decay = [p for _, p in trainable if p.dim() >= 2]
    if t.optimizer == "muon":
        embeddings = [p for name, p in trainable if "embed_tokens" in name]
        hidden = [p for name, p in trainable if p.dim() >= 2 and "embed_tokens" not in name]
        groups = [
            {"params": hidden, "weight_decay": t.weight_decay, "muon": True},
            {"params": embeddings, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # Newton-Schulz runs in bfloat16 where the hardware is fast at it, else in float32.
        dtype = torch.bfloat16 if bf16_supported(device) else torch.float32
        return MuonAdamW(groups, lr=t.learning_rate, betas=tuple(t.betas), orthogonalise_dtype=dtype)
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=tuple(t.betas), **extra)


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
    ) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.emit, self.control = emit, control or TrainControl()
        self.resume, self.threads = resume, threads
        # With train.time_budget_s: the wall-clock time (time.time()) the budget counts from
        # (the CLI passes its process's start); None means when run() is called.
        self.budget_started_at = budget_started_at
        self.budget: BudgetClock | None = None
        self.state = TrainState()
        self.losses: list[float] = []  # mean loss of each reported window (every step when log_interval=1)
        self.loader_wait_s = 0.0
        self.train_s = 0.0

    # ----- setup -------------------------------------------------------------------------
    def _log(self, text: str, level: str = "info") -> None:
        self.emit(LogLine(level, text))

    def _setup(self) -> None:
        problems = validate(self.config, cuda_available=torch.cuda.is_available())
        if problems:
            raise TrainingError("the config has problems:\n" + "\n".join(f"  - {p}" for p in problems))
        c = self.config
        self.compute: ComputeSetup = setup_compute(c.train.use_dtype, self.threads)
        self._log(f"device {self.compute.device}, {self.compute.dtype_name}, {self.compute.threads} CPU threads")

        started = time.perf_counter()
        dataset = load_documents(c.data)
        self.store: TokenStore = prepare_token_store(dataset, c.data)
        how = "from cache" if self.store.from_cache else f"in {time.perf_counter() - started:.1f} s"
        origin = f" ({corpus_origin()})" if c.data.source in EMBEDDED else ""
        self._log(
            f"data: {c.data.source}{origin}: {self.store.meta.train_tokens:,} train / {self.store.meta.val_tokens:,} val tokens "
            f"({self.store.meta.train_documents} / {self.store.meta.val_documents} documents), prepared {how}"
        )
        self._check_vocab()

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "tokenizer").exists():
            shutil.copytree(self.store.directory / "tokenizer", self.run_dir / "tokenizer")
        save_config(c, self.run_dir / "config.toml", header="The full resolved config this run used.")

        torch.manual_seed(c.train.seed)
        self.model = Transformer(c.model).to(self.compute.device)
        self.model.gradient_checkpointing = c.train.gradient_checkpointing
        self.optimizer = build_optimizer(self.model, c, self.compute.device)
        # float16 needs loss scaling so small gradients do not flush to zero; for bf16 / fp32 the
        # scaler is disabled and every call on it passes straight through.
        self.scaler = torch.amp.GradScaler(self.compute.device.type, enabled=self.compute.dtype_name == "float16")
        self.state = TrainState(config_hash=config_hash(c))
        if self.resume:
            self._restore()
        self.forward = torch.compile(self.model) if c.train.use_compile else self.model
        self.total_steps = total_steps_for(c, self.store.meta.train_tokens)
        self.flops_per_token = flops_per_token(c.model, c.train.max_seq_len)
        self.peak_flops = matmul_peak_flops(self.compute.device.type, self.compute.autocast_dtype or torch.float32)
        self.gpu = GpuUtilization(self.compute.device)

    def _check_vocab(self) -> None:
        tokens, model = self.store.meta.vocab_size, self.config.model.vocab_size
        if tokens > model:
            raise TrainingError(
                f"the tokenizer has {tokens} tokens but model.vocab_size is {model}; "
                f"set model.vocab_size = {tokens}."
            )
        if tokens < model and self.config.data.tokenizer != "bpe":
            raise TrainingError(
                f"the tokenizer ({self.config.data.tokenizer}) has {tokens} tokens but model.vocab_size is "
                f"{model}; set model.vocab_size = {tokens}."
            )
        if tokens < model:
            self._log(f"the corpus supported only {tokens} BPE tokens of the {model} asked for; "
                      "the model keeps its size (unused rows stay untrained)", "warning")

    def _restore(self) -> None:
        checkpoint = load_latest(self.run_dir, map_location=self.compute.device)
        self.model.load_state_dict(checkpoint.model_state)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        restore_rng_states(checkpoint.rng_state)
        if checkpoint.state.extra.get("grad_scaler"):
            self.scaler.load_state_dict(checkpoint.state.extra["grad_scaler"])
        if checkpoint.state.config_hash and checkpoint.state.config_hash != self.state.config_hash:
            self._log("the config differs from the one the checkpoint was trained with", "warning")
        self.state = checkpoint.state
        self.state.config_hash = config_hash(self.config)
        self._log(f"resumed from {checkpoint.path.name} at step {self.state.step}")

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> RunFinished:
        """Train to the end (or until stopped); returns the RunFinished event it also emitted."""
        wall_start = time.perf_counter()
        # Requests from other processes (RUN_DIR/control.jsonl) count from now, set-up included,
        # and so does a time budget unless the caller started its clock earlier.
        self.requests = ControlWatcher(self.run_dir)
        self.budget_started_at = self.budget_started_at or time.time()
        try:
            self._setup()
            self.emit(RunStarted(
                run_dir=str(self.run_dir), params=self.model.num_parameters(), total_steps=self.total_steps,
                tokens_per_step=self.config.train.tokens_per_step, start_step=self.state.step,
                device=str(self.compute.device), dtype=self.compute.dtype_name, threads=self.compute.threads,
                pid=os.getpid(), pid_started=psutil.Process().create_time(), host=socket.gethostname(),
                time_budget_s=self.config.train.time_budget_s,
            ))
            status = self._loop()
            if self.state.val_loss is None or self.state.extra.get("eval_step") != self.state.step:
                self._evaluate()
            self._checkpoint("final" if status == "completed" else "stop")
            message = "" if status == "completed" else "stopped on request; resume continues from here"
        except (TrainingError, ValueError, OSError) as exc:
            return self._fail(str(exc), wall_start)
        except Exception as exc:  # an engine bug: report it, never kill the caller's thread
            return self._fail(f"{exc.__class__.__name__}: {exc}", wall_start)
        finished = RunFinished(status, self.state.step, self.state.val_loss, self.state.val_bpb,
                               time.perf_counter() - wall_start, message)
        self.emit(finished)
        return finished

    def _fail(self, message: str, wall_start: float) -> RunFinished:
        self.emit(EngineError(message, recoverable=False))
        finished = RunFinished("failed", self.state.step, self.state.val_loss, self.state.val_bpb,
                               time.perf_counter() - wall_start, message)
        self.emit(finished)
        return finished

    def _loop(self) -> str:
        c, t = self.config, self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        train_tokens = self.store.meta.train_tokens
        last_checkpoint_time = time.perf_counter()
        # The window's loss stays on the device and is read only when reported: reading it
        # every step would make a GPU wait for each step to finish.
        # Time inside a window spent pausing, evaluating or checkpointing is not training time.
        window_start, window_steps, window_excluded = time.perf_counter(), 0, 0.0
        window_loss = torch.zeros((), device=self.compute.device)
        session_start, paused_s = time.perf_counter(), 0.0
        base_elapsed = self.state.elapsed_s
        loader = BatchLoader(self.store.train, t.batch_size, t.max_seq_len, t.accumulation_steps, t.seed,
                             start_step=self.state.step, device=self.compute.device)
        # A budgeted run trains until its time is up (total_steps is then only the prediction).
        budget = self.budget = self._budget_clock() if t.time_budget_s > 0 else None
        steps = itertools.count(self.state.step) if budget else range(self.state.step, self.total_steps)
        try:
            for step in steps:
                self._take_requests()
                if self.control.stop.is_set():
                    return "stopped"
                if self.control.pause.is_set():
                    paused_at = time.perf_counter()
                    self._log("paused")
                    while self.control.pause.is_set() and not self.control.stop.is_set():
                        time.sleep(0.05)
                        self._take_requests()
                    paused_s += time.perf_counter() - paused_at
                    window_excluded += time.perf_counter() - paused_at
                    if budget:  # a pause does not spend the budget
                        budget.started_at += time.perf_counter() - paused_at
                    if self.control.stop.is_set():
                        return "stopped"
                    self._log("resumed")

                if budget:
                    lr = lr_at_progress(budget.progress(), t.learning_rate, t.warmup_ratio, t.min_lr_ratio)
                else:
                    lr = lr_at(step, self.total_steps, t.learning_rate, t.warmup_ratio, t.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                step_loss = torch.zeros((), device=self.compute.device)
                for _ in range(t.accumulation_steps):
                    batch = next(loader)
                    with self.compute.autocast():
                        _, loss, _ = self.forward(batch.inputs, batch.targets)
                    self.scaler.scale(loss / t.accumulation_steps).backward()
                    step_loss += loss.detach() / t.accumulation_steps
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                self.scaler.step(self.optimizer)  # skips the step if float16 overflowed
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)

                self.state.step = step + 1
                self.state.tokens_seen += t.tokens_per_step
                previous_epoch = self.state.epoch
                self.state.epoch = self.state.tokens_seen / train_tokens
                self.state.elapsed_s = base_elapsed + time.perf_counter() - session_start - paused_s
                window_steps, window_loss = window_steps + 1, window_loss + step_loss

                if budget and budget.step_s == 0:
                    # The stop decision needs a step time before the first report; reading the
                    # loss makes the device finish the step, so the time is real. Later reports
                    # (which read the loss anyway) keep it current.
                    float(step_loss)
                    budget.record_step(time.perf_counter() - window_start - window_excluded)
                last = budget.out_of_time() if budget else self.state.step == self.total_steps
                if self.state.step % t.log_interval == 0 or last:
                    mean_loss = float(window_loss) / window_steps
                    if not math.isfinite(mean_loss):
                        raise TrainingError(
                            f"the loss became {mean_loss} by step {self.state.step}; lower train.learning_rate, "
                            "keep train.grad_clip on, or use bfloat16 instead of float16. The last checkpoint "
                            "is intact."
                        )
                    self.losses.append(mean_loss)
                    elapsed = time.perf_counter() - window_start - window_excluded
                    if budget and window_steps > 1:
                        budget.record_step(elapsed / window_steps)
                    self._emit_metrics(mean_loss, lr, float(grad_norm),
                                       window_steps * t.tokens_per_step / max(elapsed, 1e-9),
                                       elapsed / window_steps)
                    window_start, window_steps, window_excluded = time.perf_counter(), 0, 0.0
                    window_loss = torch.zeros((), device=self.compute.device)
                if (t.eval_interval and self.state.step % t.eval_interval == 0 and not last) or self.control.eval_now.is_set():
                    self.control.eval_now.clear()
                    started = time.perf_counter()
                    self._evaluate()
                    window_excluded += time.perf_counter() - started
                    if budget:
                        budget.measured_eval(time.perf_counter() - started)
                reason = self._checkpoint_reason(previous_epoch, last_checkpoint_time, last)
                if reason:
                    started = time.perf_counter()
                    self._checkpoint(reason)
                    last_checkpoint_time = time.perf_counter()
                    window_excluded += last_checkpoint_time - started
                    if budget:
                        budget.checkpoint_s = last_checkpoint_time - started
                if last:
                    break
            return "completed"
        finally:
            self.loader_wait_s = loader.wait_s
            self.train_s = time.perf_counter() - session_start - paused_s
            loader.close()

    def _budget_clock(self) -> BudgetClock:
        """The clock a budgeted run stops by; a resumed run gets what its budget has left."""
        t, extra = self.config.train, self.state.extra
        checkpoint_bytes = 4 * self.model.num_parameters() + optimizer_bytes(self.config.model, t.optimizer)
        return BudgetClock(
            budget_s=t.time_budget_s - extra.get("budget_used_s", 0.0),
            started_at=self.budget_started_at,
            start_progress=extra.get("budget_progress", 0.0),
            eval_in_steps=0.5 * t.eval_batches / t.accumulation_steps,
            checkpoint_s=0.1 + checkpoint_bytes / 200e6,  # until one has been timed
        )

    def _take_requests(self) -> None:
        """Apply pause / resume / save / eval / stop requests other processes appended."""
        for request in self.requests.poll():
            self._log(f"{request} requested through {CONTROL_FILE}")
            apply_request(request, self.control)

    def _checkpoint_reason(self, previous_epoch: float, last_time: float, last: bool) -> str | None:
        t = self.config.train
        if self.control.save_now.is_set():
            self.control.save_now.clear()
            return "requested"
        if last:
            return None  # the final checkpoint is written after the last evaluation
        if t.use_epoch_checkpoints and math.floor(self.state.epoch) > math.floor(previous_epoch):
            return "epoch"
        if t.checkpoint_every_steps and self.state.step % t.checkpoint_every_steps == 0:
            return "interval"
        if t.checkpoint_every_minutes and time.perf_counter() - last_time >= 60 * t.checkpoint_every_minutes:
            return "interval"
        return None

    def _checkpoint(self, reason: str) -> None:
        if reason == "epoch":
            name = f"epoch_{math.floor(self.state.epoch)}"
        else:
            name = f"step_{self.state.step:06d}"
        if self.budget is not None:
            spent = self.config.train.time_budget_s - self.budget.budget_s
            self.state.extra["budget_used_s"] = spent + time.time() - self.budget.started_at
            self.state.extra["budget_progress"] = self.budget.progress()
        if self.scaler.is_enabled():
            self.state.extra["grad_scaler"] = {k: v for k, v in self.scaler.state_dict().items()}
        path = save_checkpoint(self.run_dir, name, self.model, self.optimizer, self.state, self.config)
        prune_checkpoints(self.run_dir, self.config.train.keep_last_checkpoints)
        self.emit(CheckpointSaved(self.state.step, str(path), reason))

    def _emit_metrics(self, loss: float, lr: float, grad_norm: float, tokens_per_s: float, step_s: float) -> None:
        vram, vram_reserved, vram_peak = cuda_memory_mb(self.compute.device)
        if self.budget is not None:
            eta_s, progress = self.budget.remaining_s(), self.budget.progress()
        else:
            eta_s, progress = (self.total_steps - self.state.step) * step_s, self.state.step / self.total_steps
        self.emit(StepMetrics(
            step=self.state.step, epoch=self.state.epoch, loss=loss, lr=lr, grad_norm=grad_norm,
            tokens_per_s=tokens_per_s, mfu=tokens_per_s * self.flops_per_token / self.peak_flops,
            ram_mb=process_ram_mb(), vram_mb=vram, vram_reserved_mb=vram_reserved, vram_peak_mb=vram_peak,
            gpu_util=self.gpu.percent(),
            eta_s=eta_s, elapsed_s=self.state.elapsed_s, progress=progress,
        ))

    def _evaluate(self) -> EvalResult | None:
        t = self.config.train
        figures = evaluate_model(self.model, self.store.val, self.store.meta.val_bytes_per_token, t.max_seq_len,
                                 t.batch_size, t.eval_batches, self.compute.device, self.compute.autocast)
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
