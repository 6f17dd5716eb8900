"""Faults a run survives, injected through the LIGHTLM_FAULTS seam (engine/train/faults.py)."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.runs.events import EvalResult, MicroBatchReduced, RunFinished, StepMetrics, StepSkipped
from engine.runs.checkpoint import latest_name, load_latest
from engine.train.trainer import Trainer


def train(config, run_dir, **options):
    events = []
    trainer = Trainer(config, run_dir, events.append, threads=1, **options)
    return trainer, trainer.run(), events


def weights(run_dir):
    return load_file(run_dir / "checkpoints" / latest_name(run_dir) / "model.safetensors")


def test_out_of_memory_halves_the_micro_batch_and_trains_the_same_windows(tiny_run_config, tmp_path, monkeypatch):
    """At step 5 only 4 windows fit: the run goes on with micro-batches of 4 and ends where a
    run configured as 4 x 2 from the start ends (the windows of every step are the same)."""
    config = tiny_run_config(max_steps=12, eval_interval=0, batch_size=8, checkpoint_every_steps=0)
    monkeypatch.setenv("LIGHTLM_FAULTS", "oom:5:4")
    trainer, finished, events = train(config, tmp_path / "oom")
    assert finished.status == "completed" and finished.step == 12
    reduced = [e for e in events if isinstance(e, MicroBatchReduced)]
    assert [(e.step, e.micro_batch_size, e.times) for e in reduced] == [(5, 4, 1)]
    assert load_latest(tmp_path / "oom").state.notes.micro_batch_size == 4  # a resume starts at 4
    monkeypatch.delenv("LIGHTLM_FAULTS")
    _, reference, _ = train(tiny_run_config(max_steps=12, eval_interval=0, batch_size=4, accumulation_steps=2),
                            tmp_path / "four-by-two")
    a, b = weights(tmp_path / "oom"), weights(tmp_path / "four-by-two")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_a_resumed_run_keeps_the_micro_batch_that_fitted(tiny_run_config, tmp_path, monkeypatch):
    config = tiny_run_config(max_steps=6, eval_interval=0, batch_size=8)
    monkeypatch.setenv("LIGHTLM_FAULTS", "oom:2:2")
    train(config, tmp_path / "run")
    monkeypatch.delenv("LIGHTLM_FAULTS")
    resumed = Trainer(tiny_run_config(max_steps=8, eval_interval=0, batch_size=8), tmp_path / "run", resume=True,
                      threads=1)
    resumed._setup()
    assert resumed.train_step.micro_batch_size == 2


def test_out_of_memory_at_one_window_stops_with_a_checkpoint_and_what_would_fit(tiny_run_config, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("LIGHTLM_FAULTS", "oom:4:0")
    _, finished, _ = train(tiny_run_config(max_steps=10, eval_interval=0), tmp_path / "run")
    assert finished.status == "failed"
    assert "out of memory at step 4 even with one window per micro-batch" in finished.message
    assert "gradient_checkpointing" in finished.message and "max_seq_len" in finished.message
    assert "MiB by the estimate" in finished.message
    assert load_latest(tmp_path / "run").state.step == 3  # the last complete step, saved


def test_out_of_memory_in_an_evaluation_halves_its_passes_and_gives_the_same_figures(tiny_run_config, tmp_path,
                                                                                      monkeypatch):
    config = tiny_run_config(max_steps=8, eval_interval=4, batch_size=8, checkpoint_every_steps=0)
    _, _, plain = train(config, tmp_path / "plain")
    monkeypatch.setenv("LIGHTLM_FAULTS", "oom-eval:4:2")  # after step 4 only 2 windows fit a pass
    _, finished, events = train(config, tmp_path / "oom")
    assert finished.status == "completed"
    reduced = [e for e in events if isinstance(e, MicroBatchReduced)]
    assert [(e.step, e.micro_batch_size, e.where) for e in reduced] == [(4, 2, "eval")]
    assert load_latest(tmp_path / "oom").state.notes.eval_micro_batch_size == 2
    assert load_latest(tmp_path / "oom").state.notes.micro_batch_size is None  # training kept its size
    evals = [(e.step, e.val_loss) for e in events if isinstance(e, EvalResult)]
    expected = [(e.step, e.val_loss) for e in plain if isinstance(e, EvalResult)]
    assert [s for s, _ in evals] == [s for s, _ in expected] == [4, 8]
    assert [v for _, v in evals] == pytest.approx([v for _, v in expected], rel=1e-5)


def test_out_of_memory_at_one_window_in_an_evaluation_stops_with_a_checkpoint(tiny_run_config, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("LIGHTLM_FAULTS", "oom-eval:4:0")
    _, finished, _ = train(tiny_run_config(max_steps=8, eval_interval=4), tmp_path / "run")
    assert finished.status == "failed"
    assert "out of memory at the evaluation after step 4 even with one window" in finished.message
    assert load_latest(tmp_path / "run").state.step == 4


def test_a_few_bad_steps_are_skipped_and_the_run_goes_on(tiny_run_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTLM_FAULTS", "nan:7-8")
    trainer, finished, events = train(tiny_run_config(max_steps=20, eval_interval=0), tmp_path / "run")
    assert finished.status == "completed" and finished.step == 20
    assert [(e.step, e.in_a_row, e.total) for e in events if isinstance(e, StepSkipped)] == [(7, 1, 1), (8, 2, 2)]
    reported = {e.step for e in events if isinstance(e, StepMetrics)}
    assert 7 not in reported and 8 not in reported and 9 in reported  # a skipped step has no loss to report
    assert all(math.isfinite(loss) for loss in trainer.losses)
    assert load_latest(tmp_path / "run").state.notes.skipped_steps == 2


def test_bad_steps_before_any_checkpoint_stop_the_run_with_a_sentence(tiny_run_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTLM_FAULTS", "nan:0-100")
    _, finished, events = train(tiny_run_config(max_steps=20, eval_interval=0, max_bad_steps=2), tmp_path / "run")
    assert finished.status == "failed"
    assert "no checkpoint to go back to" in finished.message
    assert not any(isinstance(e, RunFinished) and e.status == "completed" for e in events)


@pytest.mark.parametrize("text", ["oom:x:1", "nan:", "fire:1"])
def test_a_malformed_fault_plan_is_refused_with_its_form(tiny_run_config, tmp_path, monkeypatch, text):
    monkeypatch.setenv("LIGHTLM_FAULTS", text)
    _, finished, _ = train(tiny_run_config(max_steps=2, eval_interval=0), tmp_path / "run")
    assert finished.status == "failed" and (
        "use oom:STEP:MAX[@RANK], oom-eval:STEP:MAX[@RANK], nan:FIRST-LAST or kill:STEP" in finished.message)


async def test_the_monitor_shows_what_the_run_survived(tiny_run_config, tmp_path, monkeypatch):
    from textual.widgets import Static

    from engine.runs.run_dir import EventLog
    from lightlm_tui.app import make_app
    from tui_helpers import wait_for

    monkeypatch.setenv("LIGHTLM_FAULTS", "oom:3:2,nan:5-5")
    run_dir = tmp_path / "run"
    log = EventLog(run_dir)
    Trainer(tiny_run_config(max_steps=8, eval_interval=0), run_dir, log.write, threads=1).run()
    log.close()
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.screen.view.finished is not None, pilot)
        await pilot.pause(0.3)
        metrics = str(app.screen.query_one("#metrics", Static).render())
        assert "micro-batch 2 (OOM x1)" in metrics
        assert "skipped   1 non-finite step" in metrics


REAL_OOM_CHILD = r'''
import resource, sys
sys.path.insert(0, sys.argv[1])
from conftest import make_tiny_run_config
from engine.train.trainer import Trainer

cache, root = sys.argv[2], sys.argv[3]
warm = make_tiny_run_config(cache, root, max_steps=1, eval_interval=0, batch_size=8, max_seq_len=64)
Trainer(warm, root + "/warm", threads=1).run()  # torch loaded, its pools and threads in place
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmPeak"))
# About 1 GB more address space than a small step needed: 2048 windows need about twice that.
limit = (peak_kb + 1_000_000) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
big = make_tiny_run_config(cache, root, max_steps=3, eval_interval=0, batch_size=2048, max_seq_len=64,
                           eval_batches=1)
events = []
finished = Trainer(big, root + "/big", events.append, threads=1).run()
import json
print(json.dumps({"status": finished.status, "message": finished.message,
                  "sizes": [e.micro_batch_size for e in events if e.type == "micro_batch_reduced"]}))
'''


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmPeak from /proc (Linux)")
def test_a_real_allocation_failure_is_survived_under_an_address_space_limit(token_cache, tmp_path):
    """A child process whose address space is capped trains micro-batches that do not fit: the
    CPU allocator's real error is caught, the micro-batch halves until it fits, and the weights
    equal those of a run configured with that micro-batch (the same windows every step)."""
    import subprocess
    import sys

    from conftest import make_tiny_run_config

    tests = str(Path(__file__).resolve().parent)
    result = subprocess.run([sys.executable, "-c", REAL_OOM_CHILD, tests, token_cache, str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "completed", outcome["message"]
    sizes = outcome["sizes"]  # the micro-batch after each halving
    assert sizes and sizes[-1] < 2048, outcome
    fitted = sizes[-1]
    reference = make_tiny_run_config(token_cache, str(tmp_path), max_steps=3, eval_interval=0, batch_size=fitted,
                                     accumulation_steps=2048 // fitted, max_seq_len=64, eval_batches=1)
    Trainer(reference, tmp_path / "reference", threads=1).run()
    a, b = weights(tmp_path / "big"), weights(tmp_path / "reference")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_a_config_that_will_not_fit_is_said_before_training(tiny_run_config, tmp_path):
    from engine.model.estimates import memory_shortfall, training_memory

    config = tiny_run_config(batch_size=64)
    need = training_memory(config.model, config.train).total
    assert memory_shortfall(config.model, config.train, need + 1) is None
    sentence = memory_shortfall(config.model, config.train, need // 2)
    assert f"training needs about {need / 2**20:,.0f} MiB" in sentence
    assert "MiB of RAM is free" in sentence and "gradient_checkpointing = true" in sentence
    two = memory_shortfall(config.model, __import__("dataclasses").replace(config.train, processes=2), need + 1)
    assert "2 processes x" in two  # every local process holds its own copy


async def test_the_config_screen_warns_when_the_estimate_exceeds_free_ram(monkeypatch):
    from collections import namedtuple

    import psutil
    from textual.widgets import Static

    from lightlm_tui.app import make_app
    from tui_helpers import wait_for

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.show_config()
        message = lambda: str(screen.query_one("#message", Static).render())  # noqa: E731
        await wait_for(lambda: "config ok" in message(), pilot)
        memory = namedtuple("memory", "total available")
        monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(2**30, 2**20))  # 1 MiB free
        screen.show_problems()
        assert "warning: training needs about" in message() and "1 MiB of RAM is free" in message()
