"""The engine thread without any UI, the step-event thinning, and the JSON event log."""

import threading

from engine.runs.events import EvalResult, LogLine, PauseChanged, RunFinished, StepMetrics, event_from_dict
from engine.runs.run_dir import read_events
from engine.launch.engine_thread import EngineRunner, StartRun, StepThinner, Stop


def test_events_round_trip_through_json():
    event = StepMetrics(step=3, epoch=0.1, loss=2.5, lr=1e-3, grad_norm=0.7, tokens_per_s=100.0, mfu=0.2, ram_mb=50.0)
    data = event.to_dict()
    assert data["type"] == "step" and event_from_dict(data) == event
    assert (event_from_dict({**EvalResult(1, 2.0, 1.5, 7.4).to_dict(), "future_field": 1})
            == EvalResult(1, 2.0, 1.5, 7.4))


def test_step_events_are_thinned_to_the_rate_but_the_last_passes():
    now = [0.0]
    thinner = StepThinner(rate=10, clock=lambda: now[0])
    passed = []
    for step in range(1, 101):
        now[0] += 0.01  # 100 steps a second
        event = StepMetrics(step, 0.0, 1.0, 1e-3, 1.0, 1.0, 0.0, 1.0)
        if thinner.allow(event, total_steps=100):
            passed.append(step)
    assert 9 <= len(passed) <= 12 and passed[-1] == 100
    assert thinner.allow(LogLine("info", "never thinned"))


def test_runner_trains_and_stops_on_request(tiny_run_config, tmp_path):
    events, done, asked_at = [], threading.Event(), []

    def listener(event, command=None):
        events.append(event)
        if isinstance(event, StepMetrics) and event.step >= 5 and not asked_at:
            asked_at.append(event.step)
            runner.submit(Stop())
        if isinstance(event, RunFinished):
            done.set()

    runner = EngineRunner(listener)
    run_dir = tmp_path / "run"
    runner.submit(StartRun(tiny_run_config(max_steps=500, eval_interval=0), run_dir))
    assert done.wait(120), "the run never finished"
    runner.close()
    finished = events[-1]
    assert finished.status == "stopped" and asked_at[0] <= finished.step <= asked_at[0] + 1  # within one step
    logged = list(read_events(run_dir))
    assert [e.type for e in logged][0] == "log" and logged[-1] == finished
    assert any(e.type == "checkpoint" for e in logged)
    assert len([e for e in logged if e.type == "step"]) == finished.step  # the log keeps every step


def test_runner_pauses_resumes_saves_and_evaluates_on_request(tiny_run_config, tmp_path):
    import time

    from engine.runs.events import CheckpointSaved
    from engine.launch.engine_thread import EvalNow, Pause, Resume, SaveNow

    events, done, paused = [], threading.Event(), threading.Event()

    def listener(event, command=None):
        events.append(event)
        if isinstance(event, PauseChanged) and event.paused:
            paused.set()
        if isinstance(event, RunFinished):
            done.set()

    runner = EngineRunner(listener, max_step_events_per_s=1000)
    runner.submit(StartRun(tiny_run_config(max_steps=400, eval_interval=0), tmp_path / "run"))
    while not any(isinstance(e, StepMetrics) for e in events):
        time.sleep(0.01)
    runner.submit(Pause())
    assert paused.wait(30)
    frozen = max(e.step for e in events if isinstance(e, StepMetrics))
    time.sleep(0.5)
    assert max(e.step for e in events if isinstance(e, StepMetrics)) <= frozen + 1  # nothing moves while paused
    runner.submit(SaveNow())
    runner.submit(EvalNow())
    runner.submit(Resume())
    assert done.wait(120)
    runner.close()
    assert any(isinstance(e, CheckpointSaved) and e.reason == "requested" for e in events)
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert len(evals) == 2 and evals[0].step < 400 and evals[-1].step == 400  # on request, then final
    assert events[-1].status == "completed"
    # The run records which Python the embedded corpus came from.
    assert any(isinstance(e, LogLine) and "python-docs (Python 3." in e.text for e in events)
