"""A run is controlled from another process through RUN_DIR/control.jsonl; `--detach` runs in the background."""

import json
import threading
import time
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.config import save_config
from engine.runs.control_channel import ControlWatcher, apply_request, send_request
from engine.runs.events import LogLine, PauseChanged, RunFinished, StepMetrics
from engine.runs.run_dir import summarize_run
from engine.train.trainer import TrainControl, Trainer


def test_watcher_reads_only_new_whole_requests(tmp_path):
    send_request(tmp_path, "stop")  # before the run started: must not count
    watcher = ControlWatcher(tmp_path, poll_s=0.0)
    assert watcher.poll() == []
    send_request(tmp_path, "pause")
    with open(tmp_path / "control.jsonl", "a") as handle:
        handle.write('{"request": "res')  # a requester caught mid-write
    assert watcher.poll() == ["pause"]
    with open(tmp_path / "control.jsonl", "a") as handle:
        handle.write('ume"}\nnot json\n{"request": "explode"}\n')
    assert watcher.poll() == ["resume"]


def test_unknown_request_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use one of pause, resume, save, eval, stop"):
        send_request(tmp_path, "explode")


def test_requests_set_the_trainer_flags():
    control = TrainControl()
    apply_request("pause", control)
    assert control.pause.is_set()
    apply_request("resume", control)
    assert not control.pause.is_set()
    for request, flag in (("save", control.save_now), ("eval", control.eval_now), ("stop", control.stop)):
        assert not flag.is_set()
        apply_request(request, control)
        assert flag.is_set(), request


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_training_run_obeys_its_control_file(tiny_run_config, tmp_path):
    config = tiny_run_config(max_steps=100_000, log_interval=5, eval_interval=0)
    run_dir = tmp_path / "runs" / "controlled"
    events = []
    trainer = Trainer(config, run_dir, events.append)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        wait_until(lambda: any(isinstance(e, StepMetrics) for e in events))
        send_request(run_dir, "pause")
        wait_until(lambda: any(isinstance(e, PauseChanged) and e.paused for e in events))
        steps_when_paused = sum(isinstance(e, StepMetrics) for e in events)
        time.sleep(0.6)
        assert sum(isinstance(e, StepMetrics) for e in events) == steps_when_paused  # really paused
        send_request(run_dir, "resume")
        wait_until(lambda: any(isinstance(e, LogLine) and e.text == "resumed" for e in events))
        send_request(run_dir, "stop")
        thread.join(60)
    finally:
        trainer.control.stop.set()
        thread.join(60)
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished and finished[0].status == "stopped"
    assert (run_dir / "checkpoints").is_dir()
    texts = [e.text for e in events if isinstance(e, LogLine)]
    assert "stop requested through control.jsonl" in texts


def test_detached_run_trains_in_the_background_and_stops_on_request(tiny_run_config, tmp_path, capsys):
    config = tiny_run_config(max_steps=100_000, log_interval=10, eval_interval=0)
    config_path = tmp_path / "run.toml"
    save_config(config, config_path)
    run_dir = tmp_path / "runs" / "background"

    started = time.monotonic()
    assert cli_main(["train", "--config", str(config_path), "--run-dir", str(run_dir), "--detach"]) == 0
    assert time.monotonic() - started < 10  # returned, did not train in the foreground
    out = capsys.readouterr().out
    assert f"lightlm-tui monitor {run_dir}" in out and "pid" in out

    wait_until(lambda: summarize_run(run_dir).status == "running" and summarize_run(run_dir).step > 0, timeout=120)
    assert cli_main(["control", str(run_dir), "stop"]) == 0
    wait_until(lambda: summarize_run(run_dir).status == "stopped", timeout=120)

    log = (run_dir / "engine.log").read_text()
    assert "Finished (stopped)" in log
    assert "stop requested through control.jsonl" in log
    # control on a run that has finished names the way to continue it
    assert cli_main(["control", str(run_dir), "pause"]) == 2
    assert "lightlm-tui resume" in capsys.readouterr().err


def test_train_refuses_a_run_dir_that_holds_a_run(tiny_run_config, tmp_path, capsys):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text(json.dumps({"type": "log", "level": "info", "text": "x"}) + "\n")
    config_path = tmp_path / "run.toml"
    save_config(tiny_run_config(), config_path)
    assert cli_main(["train", "--config", str(config_path), "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path):
    from engine.runs.events import RunStarted
    from engine.runs.run_dir import EventLog
    import socket

    log = EventLog(tmp_path)
    # pid 1 exists but started long before this "run": a reused pid is not our process
    log.write(RunStarted(run_dir=str(tmp_path), params=1, total_steps=10, tokens_per_step=1,
                         pid=1, pid_started=1.0, host=socket.gethostname()))
    log.close()
    (tmp_path / "config.toml").write_text("")
    assert summarize_run(Path(tmp_path)).status == "interrupted"


def test_resume_refuses_a_run_that_is_training_elsewhere(tiny_run_config, tmp_path, capsys):
    from engine.config import save_config as save
    from engine.runs.events import RunStarted
    from engine.runs.run_dir import EventLog
    import os
    import psutil
    import socket

    save(tiny_run_config(), tmp_path / "config.toml")
    log = EventLog(tmp_path)  # "another process" that is alive: this one
    log.write(RunStarted(run_dir=str(tmp_path), params=1, total_steps=10, tokens_per_step=1, pid=os.getpid(),
                         pid_started=psutil.Process().create_time(), host=socket.gethostname()))
    log.close()
    assert cli_main(["resume", str(tmp_path)]) == 2
    assert "is training right now" in capsys.readouterr().err
