"""Budgets as typed, the clock a budgeted run stops by, and the time-driven schedule."""

import math

import pytest

from engine.config.durations import BudgetError, format_budget, parse_budget
from engine.train.budget_clock import EXIT_TAIL_S, BudgetClock
from engine.train.schedule import lr_at, lr_at_progress


@pytest.mark.parametrize("text, seconds", [
    ("45s", 45), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400), ("2 min", 120), (" 3 hours ", 10800),
    ("0.001", 3.6), ("0.25", 900), ("90s", 90), ("1e-3h", 3.6),
])
def test_budgets_people_type(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, message", [
    ("5 parsecs", "unknown unit 'parsecs'"), ("-5m", "not a positive length of time"),
    ("0", "not a positive length of time"), ("0s", "not a positive length of time"),
    ("", "the budget is empty"), ("soon", "cannot read the budget"), ("5m 30", "a number without a unit"),
])
def test_bad_budgets_say_what_is_wrong_and_how_to_write_one(text, message):
    with pytest.raises(BudgetError, match=message) as error:
        parse_budget(text)
    assert "45s, 5m, 1.5h" in str(error.value)


def test_budgets_read_back_as_written():
    for text in ("45s", "5m", "1h30m", "2h", "5m30s"):
        assert format_budget(parse_budget(text)) == text


def warm_token_cache(config) -> None:
    """Tokenise the corpus first: a budget counts set-up too, and a cold tokenisation would eat it."""
    from engine.data.sources import load_documents
    from engine.data.token_store import prepare_token_store

    prepare_token_store(load_documents(config.data), config.data)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_clock_stops_training_so_the_final_eval_and_checkpoint_end_on_time():
    fake = FakeClock()
    clock = BudgetClock(budget_s=100, started_at=fake.now - 10, clock=fake, eval_s=4, checkpoint_s=1)  # 10 s of set-up
    clock.start_training()
    clock.record_step(0.5)
    stopped_at = None
    while stopped_at is None:
        fake.now += 0.5
        if clock.out_of_time():
            stopped_at = fake.now
    # stop with one step + eval + checkpoint + exit tail left before the deadline (1090)
    assert stopped_at == pytest.approx(1090 - 0.5 - 4 - 1 - EXIT_TAIL_S, abs=0.5)
    assert clock.progress() == pytest.approx(1.0, abs=0.01)


def test_progress_is_the_share_of_the_training_window_and_never_goes_back():
    fake = FakeClock()
    clock = BudgetClock(budget_s=60, started_at=fake.now, clock=fake, checkpoint_s=0.5)
    clock.start_training()
    window = 60 - clock.reserve_s
    fake.now += window / 4
    assert clock.progress() == pytest.approx(0.25)
    clock.measured_eval(10.0)  # the reserve grows: the window shrinks, but progress does not fall back
    assert clock.progress() >= 0.25
    fake.now += 1000
    assert clock.progress() == 1.0


def test_a_resumed_clock_continues_its_schedule():
    fake = FakeClock()
    clock = BudgetClock(budget_s=50, started_at=fake.now, start_progress=0.5, clock=fake)
    clock.start_training()
    fake.now += (50 - clock.reserve_s) / 2
    assert clock.progress() == pytest.approx(0.75)


def test_eval_is_estimated_from_step_time_until_measured():
    clock = BudgetClock(budget_s=60, started_at=0.0, eval_in_steps=5, clock=lambda: 0.0)
    clock.record_step(0.2)
    assert clock.eval_s == pytest.approx(1.0)
    clock.measured_eval(3.0)
    clock.record_step(0.2)
    assert clock.eval_s == 3.0


def test_time_schedule_matches_the_step_schedule_shape():
    peak, warmup, floor = 1e-3, 0.1, 0.1
    assert lr_at_progress(0.0, peak, warmup, floor) == pytest.approx(peak * 0.01)
    assert lr_at_progress(0.05, peak, warmup, floor) == pytest.approx(peak * 0.5)
    assert lr_at_progress(warmup, peak, warmup, floor) == pytest.approx(peak)
    assert lr_at_progress(1.0, peak, warmup, floor) == pytest.approx(peak * floor)
    assert lr_at_progress(2.0, peak, warmup, floor) == pytest.approx(peak * floor)
    values = [lr_at_progress(p / 100, peak, warmup, floor) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decays monotonically after warmup
    # the same curve as the step schedule at the same fraction of the run
    total = 1000
    for step in (200, 500, 800):
        assert lr_at_progress(step / total, peak, warmup, floor) == pytest.approx(
            lr_at(step, total, peak, warmup, floor), rel=0.01)
    assert math.isfinite(lr_at_progress(0.5, peak, 0.0, floor))


def test_a_budgeted_run_ends_on_time_with_its_schedule_finished(tiny_run_config, tmp_path):
    import time

    from engine.runs.events import StepMetrics
    from engine.train.trainer import Trainer

    config = tiny_run_config(max_steps=0, time_budget_s=6.0, log_interval=5, eval_interval=0)
    warm_token_cache(config)
    events = []
    started = time.time()
    finished = Trainer(config, tmp_path / "budget", events.append, budget_started_at=started).run()
    wall = time.time() - started
    assert finished.status == "completed"
    assert 6.0 - 1.5 <= wall <= 6.0 + 0.5  # within the exit tail (0.5 s) kept for the caller
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert steps[-1].lr == pytest.approx(config.train.learning_rate * config.train.min_lr_ratio, rel=0.02)
    assert steps[-1].progress == pytest.approx(1.0, abs=0.02)
    assert finished.step > 20


def test_a_stopped_budgeted_run_resumes_with_what_its_budget_has_left(tiny_run_config, tmp_path):
    import threading
    import time

    from engine.runs.checkpoint import load_latest
    from engine.runs.events import StepMetrics
    from engine.train.trainer import Trainer

    config = tiny_run_config(max_steps=0, time_budget_s=8.0, log_interval=5, eval_interval=0)
    warm_token_cache(config)
    run_dir = tmp_path / "budget"
    first = Trainer(config, run_dir, lambda e: None)
    stopper = threading.Timer(3.0, first.control.stop.set)
    stopper.start()
    assert first.run().status == "stopped"
    saved = load_latest(run_dir).state.notes
    assert 2.5 < saved.budget_used_s < 5.0 and 0.1 < saved.budget_progress < 0.7

    events = []
    started = time.time()
    finished = Trainer(config, run_dir, events.append, resume=True).run()
    wall = time.time() - started
    assert finished.status == "completed"
    assert wall <= 8.0 - saved.budget_used_s + 0.3
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert steps[0].progress >= saved.budget_progress - 0.01  # the schedule continues, not restarts
    assert steps[-1].lr == pytest.approx(config.train.learning_rate * config.train.min_lr_ratio, rel=0.02)
