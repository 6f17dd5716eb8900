"""The app's side of the engine: one typed method per job the screens ask for (start, resume,
plan, export, generate, control). Each request names the screen that owns it; its events come
back as Textual messages addressed to that screen, posted from the engine thread
(`post_message` is thread-safe and never blocks, so the trainer never waits on the screen)."""

from __future__ import annotations

import threading
from pathlib import Path

from textual.app import App
from textual.message import Message

from engine.config import RunConfig
from engine.launch import engine_thread as engine
from engine.runs.events import Event


class EngineEvent(Message):
    """One engine event, delivered to the app's message queue with the screen that asked for it
    (None: no screen did, e.g. an export; the app shows those itself)."""

    def __init__(self, event: Event, owner: object | None = None) -> None:
        super().__init__()
        self.event = event
        self.owner = owner


class EngineBridge:
    """Owns the engine thread for the app. torch is imported only on that thread, when work starts."""

    def __init__(self, app: App) -> None:
        self.app = app
        # id(command) -> (command, the screen it answers to), in the order submitted; holding the
        # command keeps its id from being reused while its events can still come.
        self._owners: dict[int, tuple[object, object]] = {}
        self._lock = threading.Lock()  # submit runs on the UI thread, delivery on the engine thread
        self.runner = engine.EngineRunner(self._deliver)

    def _deliver(self, event: Event, command: object) -> None:
        """On the engine thread: address the event to its command's owner."""
        key = id(command)
        with self._lock:
            if key in self._owners:
                # The engine does one command at a time: those queued before this one are done.
                for earlier in list(self._owners):
                    if earlier == key:
                        break
                    del self._owners[earlier]
            owner = self._owners.get(key, (None, None))[1]
        self.app.post_message(EngineEvent(event, owner))

    def _submit(self, command: object, owner: object | None) -> None:
        if owner is not None:
            with self._lock:
                self._owners[id(command)] = (command, owner)
        self.runner.submit(command)

    def start_run(self, config: RunConfig, owner: object | None = None) -> None:
        self._submit(engine.StartRun(config), owner)

    def resume_run(self, run_dir: Path, owner: object | None = None) -> None:
        self._submit(engine.ResumeRun(run_dir), owner)

    def plan(self, budget_s: float, base: RunConfig, owner: object | None = None) -> None:
        """Size `base` for `budget_s` on this machine; the owner gets a PlanReady or an EngineError."""
        self._submit(engine.PlanBudget(budget_s, base), owner)

    def export(self, run_dir: Path, format: str = "hf", gguf_type: str = "f32", owner: object | None = None) -> None:
        self._submit(engine.Export(run_dir, format=format, gguf_type=gguf_type), owner)

    def generate(self, run_dir: Path, prompt: str, owner: object | None = None, **settings: object) -> None:
        """Sample from `run_dir`; `settings` are engine_thread.Generate's (max_new_tokens, temperature, ...)."""
        self._submit(engine.Generate(run_dir, prompt, **settings), owner)

    def control(self, name: str) -> None:
        """pause | resume | stop | save | eval, applied to the run in progress."""
        command = {"pause": engine.Pause, "resume": engine.Resume, "stop": engine.Stop,
                   "save": engine.SaveNow, "eval": engine.EvalNow}[name]
        self.runner.submit(command())

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def close(self) -> None:
        """Stop any run (it checkpoints) and end the engine thread."""
        self.runner.close()
