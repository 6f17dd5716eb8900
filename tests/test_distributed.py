"""Training as several processes (DDP under torchrun, gloo on this CPU), through the real CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.config import save_config
from engine.runs.control_channel import send_request
from conftest import make_tiny_run_config
from engine.runs.checkpoint import latest_name, load_latest

STEPS = 20


def write_config(tiny_run_config, tmp_path, **train) -> Path:
    path = tmp_path / "config.toml"
    defaults = dict(max_steps=STEPS, batch_size=4, accumulation_steps=2, eval_interval=10)
    save_config(tiny_run_config(**{**defaults, **train}), path)
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout)


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def step_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir) if e["type"] == "step"}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / latest_name(run_dir) / "model.safetensors")


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while max(step_losses(run_dir), default=0) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def straight_runs(token_cache, tmp_path_factory):
    """The same 20 steps trained by one process and by two (same global batch)."""
    root = tmp_path_factory.mktemp("ddp")
    config = write_config(lambda **train: make_tiny_run_config(token_cache, str(root / "runs"), **train), root)
    for nproc in (1, 2):
        result = run("train", "--config", str(config), "--run-dir", str(root / f"p{nproc}"), "--nproc", str(nproc))
        assert result.returncode == 0, result.stderr[-3000:]
    return root, config


def test_two_processes_train_like_one_with_the_same_global_batch(straight_runs):
    root, _ = straight_runs
    one, two = step_losses(root / "p1"), step_losses(root / "p2")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    assert [two[s] for s in sorted(two)] == pytest.approx([one[s] for s in sorted(one)], rel=1e-4)
    assert one[STEPS] < one[1] - 0.5  # it trained
    a, b = final_weights(root / "p1"), final_weights(root / "p2")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    started = next(e for e in events(root / "p2") if e["type"] == "run_started")
    assert started["tokens_per_step"] == 8 * 32  # the global batch, not one rank's
    # Rank 0 alone wrote the run dir: one RunStarted, one final checkpoint.
    assert sum(e["type"] == "run_started" for e in events(root / "p2")) == 1
    evals = [e for e in events(root / "p2") if e["type"] == "eval"]
    evals_one = [e for e in events(root / "p1") if e["type"] == "eval"]
    assert [e["val_loss"] for e in evals] == pytest.approx([e["val_loss"] for e in evals_one], rel=1e-4)


def test_a_stop_request_stops_every_rank_and_resume_works_at_any_world_size(straight_runs, tmp_path):
    root, config = straight_runs
    stopped = tmp_path / "stopped"
    # A checkpoint every step (math unchanged) keeps the 18 steps after the request longer than
    # the request takes to be read, even on a quiet machine where tiny steps take milliseconds.
    process = subprocess.Popen(cli("train", "--config", str(config), "--run-dir", str(stopped), "--nproc", "2",
                                   "--set", "train.log_interval=1", "--set", "train.checkpoint_every_steps=1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Early, so the request (read every 0.25 s) lands well before the 20th step on a fast machine.
    wait_for_step(stopped, 2, process)
    send_request(stopped, "stop")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]  # every rank ended cleanly: none disagreed or hung
    finished = next(e for e in events(stopped) if e["type"] == "finished")
    assert finished["status"] == "stopped" and 2 <= finished["step"] < STEPS
    assert load_latest(stopped).state.step == finished["step"]

    at_one = tmp_path / "at-one"
    shutil.copytree(stopped, at_one)
    for run_dir, nproc in ((stopped, "2"), (at_one, "1")):
        result = run("resume", str(run_dir), "--nproc", nproc)
        assert result.returncode == 0, result.stderr[-3000:]
        assert load_latest(run_dir).state.step == STEPS
    straight = final_weights(root / "p2")
    same_size, other_size = final_weights(stopped), final_weights(at_one)
    assert all(torch.equal(straight[k], same_size[k]) for k in straight)  # bit-exact at the same world size
    assert all(torch.allclose(straight[k], other_size[k], rtol=1e-4, atol=1e-5) for k in straight)


def test_out_of_memory_on_one_rank_makes_every_rank_retry_with_half_the_micro_batch(straight_runs, tmp_path):
    """Rank 1 alone runs out of memory at step 5 (its 4 windows do not fit, 2 do): both ranks
    halve together and the run ends where the uninterrupted one does (same windows every step)."""
    root, config = straight_runs
    run_dir = tmp_path / "oom"
    result = subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--nproc", "2"),
                            capture_output=True, text=True, timeout=240,
                            env={**os.environ, "LIGHTLM_FAULTS": "oom:5:2@1"})
    assert result.returncode == 0, result.stderr[-3000:]
    reduced = [e for e in events(run_dir) if e["type"] == "micro_batch_reduced"]
    assert [(e["step"], e["micro_batch_size"], e["times"]) for e in reduced] == [(5, 2, 1)]
    assert load_latest(run_dir).state.step == STEPS
    assert load_latest(run_dir).state.notes.micro_batch_size == 2  # rank 0 halved too, and a resume keeps it
    straight, recovered = final_weights(root / "p2"), final_weights(run_dir)
    assert all(torch.allclose(straight[k], recovered[k], rtol=1e-4, atol=1e-5) for k in straight)


def test_out_of_memory_at_one_window_on_one_rank_stops_every_rank_with_a_checkpoint(straight_runs, tmp_path):
    root, config = straight_runs
    run_dir = tmp_path / "oom-at-one"
    started = time.monotonic()
    result = subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--nproc", "2"),
                            capture_output=True, text=True, timeout=240,
                            env={**os.environ, "LIGHTLM_FAULTS": "oom:4:0@1"})
    assert time.monotonic() - started < 120  # no rank waited out the collective timeout
    assert result.returncode != 0
    finished = next(e for e in events(run_dir) if e["type"] == "finished")
    assert finished["status"] == "failed" and "train.gradient_checkpointing" in finished["message"]
    assert load_latest(run_dir).state.step == 3  # the last complete step is saved


def test_out_of_memory_in_an_evaluation_on_one_rank_is_agreed_by_every_rank(straight_runs, tmp_path):
    root, config = straight_runs
    halved, gave_up = tmp_path / "eval-halved", tmp_path / "eval-gave-up"
    for run_dir, fault in ((halved, "oom-eval:10:2@1"), (gave_up, "oom-eval:10:0@1")):
        subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--nproc", "2"),
                       capture_output=True, text=True, timeout=240, env={**os.environ, "LIGHTLM_FAULTS": fault})
    # Rank 1 needed passes of 2 windows: every rank keeps 2, and the figures are the same.
    assert load_latest(halved).state.notes.eval_micro_batch_size == 2
    straight = [e["val_loss"] for e in events(root / "p2") if e["type"] == "eval"]
    assert [e["val_loss"] for e in events(halved) if e["type"] == "eval"] == pytest.approx(straight, rel=1e-5)
    # Rank 1 could not fit one window: both ranks stop with the sentence (neither waits out a timeout).
    finished = next(e for e in events(gave_up) if e["type"] == "finished")
    assert finished["status"] == "failed" and "the evaluation after step 10" in finished["message"]
    assert load_latest(gave_up).state.step == 10


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_run_quickly_and_resume_continues(tiny_run_config, tmp_path):
    config = write_config(tiny_run_config, tmp_path, max_steps=100_000, checkpoint_every_steps=3, eval_interval=0)
    run_dir = tmp_path / "killed"
    # A mark in the environment finds this run's ranks among the machine's processes.
    process = subprocess.Popen(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--nproc", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "LIGHTLM_TEST_MARK": "pending"})
    try:
        wait_for_step(run_dir, 4, process)
        ranks = {}
        for entry in Path("/proc").iterdir():  # the two ranks: children of torchrun with our mark
            if entry.name.isdigit():
                try:
                    environ = (entry / "environ").read_bytes()
                except OSError:
                    continue
                if b"LIGHTLM_TEST_MARK=pending" in environ and b"TORCHELASTIC_RUN_ID" in environ:
                    rank = [v for v in environ.split(b"\0") if v.startswith(b"RANK=")]
                    if rank:
                        ranks[int(rank[0][5:])] = int(entry.name)
        assert sorted(ranks) == [0, 1]
        killed_at = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        output, _ = process.communicate(timeout=120)
        assert time.monotonic() - killed_at < 90  # not torch's default 30 minutes
        assert process.returncode != 0
        assert "rank" in output.lower()
    finally:
        if process.poll() is None:
            process.kill()
    checkpoint = load_latest(run_dir)  # complete, and `latest` names it
    assert checkpoint.state.step >= 3
    text = (run_dir / "config.toml").read_text().replace("max_steps = 100000",
                                                         f"max_steps = {checkpoint.state.step + 2}")
    (run_dir / "config.toml").write_text(text)
    result = run("resume", str(run_dir), "--nproc", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_latest(run_dir).state.step == checkpoint.state.step + 2


def test_two_nodes_on_one_machine_train_together(tiny_run_config, tmp_path):
    import socket

    with socket.socket() as probe:  # a free port for node 0's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tiny_run_config, tmp_path, max_steps=6, eval_interval=0)
    nodes = [
        subprocess.Popen(cli("train", "--config", str(config), "--run-dir", str(tmp_path / f"node{rank}"),
                             "--nproc", "1", "--nnodes", "2", "--node-rank", str(rank),
                             "--rdzv-endpoint", f"127.0.0.1:{port}"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert load_latest(tmp_path / "node0").state.step == 6  # node 0 holds rank 0, which writes the run
    assert not (tmp_path / "node1" / "events.jsonl").exists()


async def test_the_app_starts_a_two_process_run_and_its_monitor_follows_it(tiny_run_config):
    from lightlm_tui.app import make_app
    from lightlm_tui.screens.monitor import MonitorScreen
    from tui_helpers import wait_for

    config = tiny_run_config(max_steps=12, eval_interval=6, batch_size=4, accumulation_steps=2, processes=2)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = app.start_run(config)
        assert isinstance(monitor, MonitorScreen) and monitor.bridge is None  # followed through its run dir
        await wait_for(lambda: monitor.view.finished is not None, pilot, timeout=180)
        assert monitor.view.finished.status == "completed" and monitor.view.finished.step == 12
        assert "2 processes (DDP)" in "\n".join(monitor.view.log)
    assert load_latest(monitor.run_dir).state.step == 12


def test_a_machine_that_never_joins_ends_the_launch_with_a_sentence(tiny_run_config, tmp_path, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tiny_run_config, tmp_path, max_steps=4, eval_interval=0)
    monkeypatch.setenv("LIGHTLM_JOIN_TIMEOUT_S", "15")
    started = time.monotonic()
    result = run("train", "--config", str(config), "--run-dir", str(tmp_path / "alone"), "--nproc", "1",
                 "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", f"127.0.0.1:{port}", timeout=180)
    assert result.returncode != 0 and time.monotonic() - started < 120
    assert "not every machine joined" in result.stdout + result.stderr


def test_a_time_budget_under_ddp_ends_on_time(tiny_run_config, tmp_path):
    """The launcher's start is the budget's start (torchrun and the ranks' set-up count too);
    rank 0's clock decides the last step for every rank."""
    config = write_config(tiny_run_config, tmp_path, max_steps=0, time_budget_s=25.0, eval_interval=0,
                          log_interval=5)
    started = time.monotonic()
    result = run("train", "--config", str(config), "--run-dir", str(tmp_path / "budget"), "--nproc", "2")
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    finished = next(e for e in events(tmp_path / "budget") if e["type"] == "finished")
    assert finished["status"] == "completed" and finished["step"] >= 3
    assert 25.0 - 4.0 <= wall <= 25.0 + 2.0, wall  # within what torchrun takes to end
