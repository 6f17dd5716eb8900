"""The fault-injection suite: kill -9 during steps and during a checkpoint write, a full disk,
damaged files, and two requesters writing to one control channel. Every outcome: a clear
sentence, the previous complete checkpoint intact, and a resume that ends where an
uninterrupted run ends (bit for bit: CPU, fp32)."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.config import save_config
from engine.runs.control_channel import ControlWatcher, send_request
from engine.runs.run_dir import list_runs
from engine.runs.checkpoint import CheckpointError, complete_checkpoints, latest_name, load_latest

STEPS = 12


def cli(*args):
    return [sys.executable, "-m", "engine.cli", *args]


def weights(run_dir):
    return load_file(Path(run_dir) / "checkpoints" / latest_name(run_dir) / "model.safetensors")


def last_step(run_dir):
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines()
             if line.startswith('{"type": "step"')]
    return max(steps, default=0)


@pytest.fixture(scope="module")
def setup(token_cache, tmp_path_factory):
    """A config (checkpoint every 3 steps) and its uninterrupted run, trained through the CLI."""
    from conftest import make_tiny_run_config

    root = tmp_path_factory.mktemp("faults")
    config = root / "config.toml"
    save_config(make_tiny_run_config(token_cache, str(root / "runs"), max_steps=STEPS, checkpoint_every_steps=3,
                                     eval_interval=4), config)
    result = subprocess.run(cli("train", "--config", str(config), "--run-dir", str(root / "straight")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return config, weights(root / "straight")


def resume_to_the_end(run_dir, **env):
    result = subprocess.run(cli("resume", str(run_dir)), capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert load_latest(run_dir).state.step == STEPS


def test_kill_9_between_steps_then_resume_ends_bit_identical(setup, tmp_path):
    config, straight = setup
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(cli("train", "--config", str(config), "--run-dir", str(run_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while last_step(run_dir) < 7:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(60)
    assert load_latest(run_dir).state.step in (6, 9)  # a complete checkpoint, whatever the moment
    resume_to_the_end(run_dir)
    ended = weights(run_dir)
    assert all(torch.equal(straight[k], ended[k]) for k in straight)


def test_kill_9_while_a_checkpoint_is_written_then_resume_ends_bit_identical(setup, tmp_path):
    config, straight = setup
    run_dir = tmp_path / "killed-saving"
    result = subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir)),
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "LIGHTLM_FAULTS": "kill:6"})
    assert result.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and latest_name(run_dir) == "step_000003"  # the half-written one is not the latest
    resume_to_the_end(run_dir)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]  # cleaned up
    ended = weights(run_dir)
    assert all(torch.equal(straight[k], ended[k]) for k in straight)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(setup, tmp_path):
    """The weights file no longer fits (RLIMIT_FSIZE, as a full disk): the interval save is
    skipped with a warning and the run goes on; the final save fails with a sentence; the
    checkpoint written before stays complete and `latest`."""
    config, _ = setup
    run_dir = tmp_path / "full"
    first = subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir),
                               "--set", "train.max_steps=3"), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and latest_name(run_dir) == "step_000003"
    (run_dir / "config.toml").write_text(
        (run_dir / "config.toml").read_text().replace("max_steps = 3", "max_steps = 8"))
    weights_size = (run_dir / "checkpoints" / "step_000003" / "model.safetensors").stat().st_size

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (weights_size // 2, weights_size // 2))

    result = subprocess.run(cli("resume", str(run_dir)), capture_output=True, text=True, timeout=300,
                            preexec_fn=small_disk)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "could not write checkpoint step_000006" in output and "training goes on" in output
    assert "could not write checkpoint step_000008" in output and "step_000003 is intact" in output
    assert latest_name(run_dir) == "step_000003" and load_latest(run_dir).state.step == 3
    assert [p.name for p in complete_checkpoints(run_dir)] == ["step_000003"]


def test_damaged_checkpoint_files_are_named_and_the_previous_one_offered(setup, tmp_path):
    config, _ = setup
    run_dir = tmp_path / "damaged"
    subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--set", "train.max_steps=6"),
                   check=True, capture_output=True, timeout=300)
    checkpoints = run_dir / "checkpoints"
    weights_file = checkpoints / "step_000006" / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the last tensor's data: safetensors itself would not notice
    weights_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as caught:
        load_latest(run_dir)
    message = str(caught.value)
    assert "model.safetensors is damaged" in message and "step_000003" in message and "--from step_000003" in message
    result = subprocess.run(cli("resume", str(run_dir)), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "model.safetensors is damaged" in result.stderr
    assert "Traceback" not in result.stderr

    weights_file.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        load_latest(run_dir)
    (checkpoints / "step_000006" / "state.json").unlink()  # missing: incomplete, never loaded
    assert [p.name for p in complete_checkpoints(run_dir)] == ["step_000003"]
    (checkpoints / "latest").write_text("")  # empty pointer: the newest complete checkpoint
    assert load_latest(run_dir).state.step == 3

    # --from continues from the offered checkpoint: the run goes on from step 3 to its end.
    (checkpoints / "latest").write_text("step_000006\n")
    result = subprocess.run(cli("resume", str(run_dir), "--from", "step_000003"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_latest(run_dir).state.step == 6


def test_garbage_and_half_written_lines_are_skipped(setup, tmp_path):
    config, _ = setup
    run_dir = tmp_path / "runs" / "noisy"
    subprocess.run(cli("train", "--config", str(config), "--run-dir", str(run_dir), "--set", "train.max_steps=3"),
                   check=True, capture_output=True, timeout=300)
    with open(run_dir / "events.jsonl", "a") as events:
        events.write("not json at all\n{\"type\": \"step\", \"step\": \n[1, 2]\n{\"type\": \"nonsense\"}\n{\"type\"")
    summary = {run.name: run for run in list_runs(tmp_path / "runs")}["noisy"]
    assert summary.status == "completed" and summary.step == 3
    watcher = ControlWatcher(run_dir, poll_s=0)
    with open(run_dir / "control.jsonl", "a") as control:
        control.write('garbage\n{"request": "explode"}\n{"request": "save"}\n{"request": "st')
    assert watcher.poll() == ["save"]  # the half-written last line waits for its end
    with open(run_dir / "control.jsonl", "a") as control:
        control.write('op"}\n')
    assert watcher.poll() == ["stop"]


def test_two_requesters_at_once_lose_no_request_and_double_none(tmp_path):
    """Two Monitors (here: two processes) append requests to one control file at the same time;
    the run reads every one exactly once."""
    watcher = ControlWatcher(tmp_path, poll_s=0)
    script = ("import sys\nfrom engine.runs.control_channel import send_request\n"
              "for i in range(300):\n    send_request(sys.argv[1], sys.argv[2])\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), request]) for request in ("save", "eval")]
    seen = []
    while any(w.poll() is None for w in writers):
        seen += watcher.poll()
    seen += watcher.poll()
    assert all(w.returncode == 0 for w in writers)
    assert seen.count("save") == 300 and seen.count("eval") == 300 and len(seen) == 600
    send_request(tmp_path, "stop")
    assert watcher.poll() == ["stop"] and watcher.poll() == []
