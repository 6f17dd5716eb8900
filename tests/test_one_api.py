"""Every front end does a job the same way: the CLI and the app's engine thread both reach it
through engine.api, so the same tiny run and the same export leave the same files behind."""

import io
import threading
from pathlib import Path

from engine.cli import main
from engine.config import load_config, save_config
from engine.launch.engine_thread import EngineRunner, Export, StartRun
from engine.runs.events import ExportFinished, RunFinished
from engine.runs.run_dir import read_events


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def run_on_the_engine_thread(*commands, until) -> list:
    """Submit `commands` one after another, each once the one before has ended (`until`)."""
    events, done = [], threading.Event()

    def listener(event, command):
        events.append(event)
        if until(event):
            done.set()

    runner = EngineRunner(listener, max_step_events_per_s=1000)
    try:
        for command in commands:
            done.clear()
            runner.submit(command)
            assert done.wait(180), f"{command} never ended"
    finally:
        runner.close()
    return events


def test_the_cli_and_the_engine_thread_leave_the_same_run_and_export(tiny_run_config, tmp_path):
    config = tiny_run_config(max_steps=6, eval_interval=3)
    by_cli, by_thread = tmp_path / "cli", tmp_path / "thread"
    config_path = save_config(config, tmp_path / "run.toml")
    err = io.StringIO()
    assert main(["train", "--config", str(config_path), "--run-dir", str(by_cli)], out=io.StringIO(), err=err) == 0, \
        err.getvalue()
    assert main(["export", str(by_cli)], out=io.StringIO(), err=err) == 0, err.getvalue()

    events = run_on_the_engine_thread(StartRun(config, by_thread), Export(by_thread),
                                      until=lambda e: isinstance(e, (RunFinished, ExportFinished)))
    assert [e.status for e in events if isinstance(e, RunFinished)] == ["completed"]

    assert load_config(by_cli / "config.toml") == load_config(by_thread / "config.toml")
    assert (by_cli / "config.toml").read_text() == (by_thread / "config.toml").read_text()
    logged = {folder: list(read_events(folder)) for folder in (by_cli, by_thread)}
    assert [e.type for e in logged[by_cli]] == [e.type for e in logged[by_thread]]
    assert [e.step for e in logged[by_cli] if e.type == "step"] == list(range(1, 7))
    assert files_under(by_cli / "checkpoints") == files_under(by_thread / "checkpoints")
    assert files_under(by_cli / "export") == files_under(by_thread / "export")
    assert "hf/model.safetensors" in files_under(by_cli / "export")
    # Same config, same seed, fp32 on one thread of work: the same losses, step by step.
    losses = {folder: [e.loss for e in events if e.type == "step"] for folder, events in logged.items()}
    assert losses[by_cli] == losses[by_thread]
