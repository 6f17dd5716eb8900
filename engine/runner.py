"""The engine thread: takes commands from a queue, runs the work, emits events.

Long work (start a run, generate) is queued and done one item at a time on the engine
thread, which owns torch. Control requests (pause, resume, stop, save now, eval now) act at
once through the running trainer's flags, since the engine thread is busy training when they
matter. Every event of a run goes to its events.jsonl; the listener (the UI) gets them too,
with step events thinned to at most `max_step_events_per_s` so drawing never slows training.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config import RunConfig
from engine.errors import UserFacingError
from engine.runs.events import EngineError, Event, ExportFinished, GeneratedText, LogLine, PlanReady, StepMetrics
from engine.runs.run_dir import EventLog, new_run_dir


@dataclass(frozen=True)
class StartRun:
    config: RunConfig
    run_dir: Path | None = None  # None: a new folder under config.train.runs_dir
    resume: bool = False


@dataclass(frozen=True)
class Generate:
    run_dir: Path
    prompt: str
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = 0.95
    seed: int | None = None


@dataclass(frozen=True)
class Export:
    run_dir: Path
    # The target: a folder for "hf", a file for "gguf"; None: RUN_DIR/export/hf or
    # RUN_DIR/export/gguf/RUN-TYPE.gguf.
    out_dir: Path | None = None
    format: str = "hf"  # "hf" or "gguf"
    gguf_type: str = "f32"  # with "gguf": f32, f16, bf16 or q8_0


@dataclass(frozen=True)
class PlanBudget:
    """Size `base` for `budget_s` seconds on this machine; answered with a PlanReady event."""

    budget_s: float
    base: RunConfig


@dataclass(frozen=True)
class Pause: ...


@dataclass(frozen=True)
class Resume: ...


@dataclass(frozen=True)
class Stop: ...


@dataclass(frozen=True)
class SaveNow: ...


@dataclass(frozen=True)
class EvalNow: ...


@dataclass(frozen=True)
class Shutdown: ...


class StepThinner:
    """Passes every event except step events closer than 1/rate seconds to the previous one;
    the last step of a run always passes (so a view ends on the true final numbers)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock, self.last = 1.0 / rate, clock, float("-inf")

    def allow(self, event: Event, total_steps: int | None = None) -> bool:
        if not isinstance(event, StepMetrics):
            return True
        now = self.clock()
        if now - self.last >= self.interval or (total_steps is not None and event.step >= total_steps):
            self.last = now
            return True
        return False


class EngineRunner:
    """Owns the engine thread. `submit(command)`; events arrive on `listener` (from that thread)."""

    def __init__(
        self,
        listener: Callable[[Event], None],
        max_step_events_per_s: float = 10.0,
        threads: int | None = None,
    ) -> None:
        self.listener = listener
        self.threads = threads  # torch intra-op threads for runs (None: engine.device's default)
        self.thinner = StepThinner(max_step_events_per_s)
        self._commands: queue.Queue = queue.Queue()
        self._trainer = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="lightlm-engine", daemon=True)
        self._thread.start()

    # Commands -------------------------------------------------------------------------
    def submit(self, command: object) -> None:
        """Queue long work, or apply a control request to the running trainer at once."""
        control = {Pause: "pause", Stop: "stop", SaveNow: "save_now", EvalNow: "eval_now"}
        with self._lock:
            trainer = self._trainer
        if type(command) in control or isinstance(command, Resume):
            if trainer is None:
                self.listener(LogLine("warning", f"no run in progress to {type(command).__name__.lower()}"))
            elif isinstance(command, Resume):
                trainer.control.pause.clear()
            else:
                getattr(trainer.control, control[type(command)]).set()
            return
        self._commands.put(command)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._trainer is not None

    def close(self, timeout: float = 30.0) -> None:
        """Stop any run (it saves a checkpoint), end the thread, wait for it."""
        with self._lock:
            if self._trainer is not None:
                self._trainer.control.stop.set()
                self._trainer.control.pause.clear()
        self._commands.put(Shutdown())
        self._thread.join(timeout)

    # The engine thread ------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            command = self._commands.get()
            if isinstance(command, Shutdown):
                return
            try:
                if isinstance(command, StartRun):
                    self._run(command)
                elif isinstance(command, Generate):
                    self._generate(command)
                elif isinstance(command, Export):
                    self._export(command)
                elif isinstance(command, PlanBudget):
                    self._plan(command)
                else:
                    self.listener(EngineError(f"unknown command {command!r}", recoverable=True))
            except UserFacingError as exc:  # a bad input: its sentence is the whole message
                self.listener(EngineError(str(exc), recoverable=True))
            except Exception as exc:  # the thread must survive anything a command does
                self.listener(EngineError(f"{exc.__class__.__name__}: {exc}", recoverable=True))

    def _run(self, command: StartRun) -> None:
        from engine.train.trainer import Trainer  # torch loads here, on the engine thread

        run_dir = command.run_dir or new_run_dir(command.config.train.runs_dir, command.config.name)
        log = EventLog(run_dir)
        total: dict[str, int] = {}

        def emit(event: Event) -> None:
            log.write(event)
            if getattr(event, "total_steps", None):
                total["steps"] = event.total_steps
            if self.thinner.allow(event, total.get("steps")):
                self.listener(event)

        trainer = Trainer(command.config, run_dir, emit, resume=command.resume, threads=self.threads)
        with self._lock:
            self._trainer = trainer
        try:
            trainer.run()
        finally:
            with self._lock:
                self._trainer = None
            log.close()

    def _plan(self, command: PlanBudget) -> None:
        from engine.config import config_to_dict
        from engine.planner.plan import plan_for_this_machine, summary_lines

        # The run's budget starts when it is started (Start on the Config screen), not now:
        # the time spent planning is not taken from it.
        plan = plan_for_this_machine(command.budget_s, command.base, started_at=None)
        self.listener(PlanReady(command.budget_s, config_to_dict(plan.config), summary_lines(plan),
                                plan.reasons, plan.warnings))

    def _export(self, command: Export) -> None:
        if command.format == "gguf":
            from engine.gguf_export import export_gguf

            target = export_gguf(command.run_dir, command.out_dir, command.gguf_type)
        else:
            from engine.export import export_hf_and_adapters

            target, adapters = export_hf_and_adapters(command.run_dir, command.out_dir)
            if adapters is not None:  # a LoRA run: the model above is merged; the adapters go beside it
                self.listener(LogLine("info", f"LoRA adapters exported for peft to {adapters[0]} (their base "
                                              f"model: {adapters[1]})"))
        self.listener(ExportFinished(str(command.run_dir), str(target), command.format))

    def _generate(self, command: Generate) -> None:
        from engine.generation import SamplingSettings, generate_text, load_run

        run = load_run(command.run_dir)
        settings = SamplingSettings(command.max_new_tokens, command.temperature, command.top_k,
                                    command.top_p, command.seed)
        last_sent = [0.0]

        def stream(text: str) -> None:
            now = time.monotonic()
            if now - last_sent[0] >= 0.05:  # at most 20 partial updates a second
                last_sent[0] = now
                self.listener(GeneratedText(text, done=False))

        text = generate_text(run, command.prompt, settings, on_text=stream)
        self.listener(GeneratedText(text, done=True))

