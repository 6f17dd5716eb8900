"""The app's side of the engine: commands go into the EngineRunner's queue, events come back
as Textual messages posted from the engine thread (`post_message` is thread-safe and never
blocks, so the trainer never waits on the screen)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.message import Message

from engine.config import RunConfig
from engine.runs.events import Event


class EngineEvent(Message):
    """One engine event, delivered to the app's message queue."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class EngineBridge:
    """Owns the engine thread for the app. torch is imported only on that thread, when a run starts."""

    def __init__(self, app: App) -> None:
        from engine.runner import EngineRunner

        self.app = app
        self.runner = EngineRunner(lambda event: app.post_message(EngineEvent(event)))

    def start_run(self, config: RunConfig, run_dir: Path | None = None, resume: bool = False) -> None:
        from engine.runner import StartRun

        self.runner.submit(StartRun(config, run_dir, resume))

    def control(self, name: str) -> None:
        """pause | resume | stop | save | eval, applied to the run in progress."""
        from engine import runner

        command = {"pause": runner.Pause, "resume": runner.Resume, "stop": runner.Stop,
                   "save": runner.SaveNow, "eval": runner.EvalNow}[name]
        self.runner.submit(command())

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def close(self) -> None:
        """Stop any run (it checkpoints) and end the engine thread."""
        self.runner.close()
