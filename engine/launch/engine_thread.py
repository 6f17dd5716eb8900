"""The engine thread: takes commands from a queue, does each through engine.api, emits events.

Long work (start or resume a run, plan, generate, export) is queued and done one item at a
time on the engine thread, which owns torch. Control requests (pause, resume, stop, save now,
eval now) act at once through the running run's TrainControl, since the engine thread is busy
training when they matter. Every event of a run goes to its events.jsonl (engine.api does
that); the listener (the UI) gets each event with the command it answers, with step events
thinned to at most `max_step_events_per_s` so drawing never slows training.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import api
from engine.config import RunConfig
from engine.errors import UserFacingError
from engine.runs.events import EngineError, Event, ExportFinished, GeneratedText, LogLine, PlanReady, StepMetrics

# Called on the engine thread with each event and the command it answers (None: no command).
Listener = Callable[[Event, object], None]


@dataclass(frozen=True)
class StartRun:
    config: RunConfig
    run_dir: Path | None = None  # None: a new folder under config.train.runs_dir


@dataclass(frozen=True)
class ResumeRun:
    """Continue a run from its latest checkpoint, with the config it recorded."""

    run_dir: Path


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

    def __init__(self, listener: Listener, max_step_events_per_s: float = 10.0, threads: int | None = None) -> None:
        self.listener = listener
        self.threads = threads  # torch intra-op threads for runs (None: engine.machine.device's default)
        self.thinner = StepThinner(max_step_events_per_s)
        self._commands: queue.Queue = queue.Queue()
        self._control = None  # the TrainControl of the run in progress
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="lightlm-engine", daemon=True)
        self._thread.start()

    # Commands -------------------------------------------------------------------------
    def submit(self, command: object) -> None:
        """Queue long work, or apply a control request to the run in progress at once."""
        flags = {Pause: "pause", Stop: "stop", SaveNow: "save_now", EvalNow: "eval_now"}
        if type(command) not in flags and not isinstance(command, Resume):
            self._commands.put(command)
            return
        with self._lock:
            control = self._control
        if control is None:
            self.listener(LogLine("warning", f"no run in progress to {type(command).__name__.lower()}"), command)
        elif isinstance(command, Resume):
            control.pause.clear()
        else:
            getattr(control, flags[type(command)]).set()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._control is not None

    def close(self, timeout: float = 30.0) -> None:
        """Stop any run (it saves a checkpoint), end the thread, wait for it."""
        with self._lock:
            if self._control is not None:
                self._control.stop.set()
                self._control.pause.clear()
        self._commands.put(Shutdown())
        self._thread.join(timeout)

    # The engine thread ------------------------------------------------------------------
    def _serve(self) -> None:
        work = {StartRun: self._run, ResumeRun: self._run, Generate: self._generate, Export: self._export,
                PlanBudget: self._plan}
        while True:
            command = self._commands.get()
            if isinstance(command, Shutdown):
                return
            try:
                if type(command) not in work:
                    raise UserFacingError(f"unknown command {command!r}")
                work[type(command)](command)
            except UserFacingError as exc:  # a bad input: its sentence is the whole message
                self.listener(EngineError(str(exc), recoverable=True), command)
            except Exception as exc:  # the thread must survive anything a command does
                self.listener(EngineError(f"{exc.__class__.__name__}: {exc}", recoverable=True), command)

    def _run(self, command: StartRun | ResumeRun) -> None:
        from engine.train.decision import TrainControl  # torch loads here, on the engine thread

        total: dict[str, int] = {}

        def on_event(event: Event) -> None:
            if getattr(event, "total_steps", None):
                total["steps"] = event.total_steps
            if self.thinner.allow(event, total.get("steps")):
                self.listener(event, command)

        control = TrainControl()
        with self._lock:
            self._control = control
        try:
            # One process: a run of several the app starts in the background (engine.api, detach).
            one = api.Launch(nproc=1)
            if isinstance(command, ResumeRun):
                api.resume_run(command.run_dir, launch=one, on_event=on_event, control=control, threads=self.threads)
            else:
                api.start_run(command.config, run_dir=command.run_dir, launch=one, on_event=on_event,
                              control=control, threads=self.threads)
        finally:
            with self._lock:
                self._control = None

    def _plan(self, command: PlanBudget) -> None:
        from engine.config import config_to_dict
        from engine.planner.plan import summary_lines

        # The run's budget starts when it is started (Start on the Config screen), not now:
        # the time spent planning is not taken from it.
        plan = api.plan(command.budget_s, command.base)
        self.listener(PlanReady(command.budget_s, config_to_dict(plan.config), summary_lines(plan),
                                plan.reasons, plan.warnings), command)

    def _export(self, command: Export) -> None:
        done = api.export(command.run_dir, command.format, command.out_dir, command.gguf_type)
        if done.adapters is not None:  # a LoRA run: the model above is merged; the adapters go beside it
            self.listener(LogLine("info", f"LoRA adapters exported for peft to {done.adapters} (their base "
                                          f"model: {done.adapters_base})"), command)
        self.listener(ExportFinished(str(command.run_dir), str(done.path), command.format), command)

    def _generate(self, command: Generate) -> None:
        from engine.use.generate import SamplingSettings

        settings = SamplingSettings(command.max_new_tokens, command.temperature, command.top_k,
                                    command.top_p, command.seed)
        last_sent = 0.0

        def stream(text: str) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent >= 0.05:  # at most 20 partial updates a second
                last_sent = now
                self.listener(GeneratedText(text, done=False), command)

        text = api.generate(command.run_dir, command.prompt, settings, on_text=stream)
        self.listener(GeneratedText(text, done=True), command)
