"""The Budget screen, driven with the pilot: a typed budget becomes a plan beside the current config."""

from textual.widgets import DataTable, Input, Static

from lightlm_tui.app import make_app
from lightlm_tui.screens.budget import BudgetScreen
from lightlm_tui.screens.monitor import MonitorScreen
from test_planner import fake_calibration
from test_tui_config import cell, open_config
from tui_helpers import wait_for


def state(app) -> str:
    return str(app.screen.query_one("#state", Static).render())


async def open_budget(app, pilot, budget: str):
    config_screen = await open_config(app, pilot)
    await pilot.press("b")
    await wait_for(lambda: isinstance(app.screen, BudgetScreen), pilot)
    app.screen.query_one("#budget", Input).value = budget
    await pilot.press("enter")
    return config_screen


async def test_a_budget_becomes_a_plan_that_applies_to_the_config(monkeypatch):
    monkeypatch.setattr("engine.planner.calibrate.calibrate", lambda **kwargs: fake_calibration())
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        config_screen = await open_budget(app, pilot, "2m")
        await wait_for(lambda: state(app).startswith("plan for 2m"), pilot)
        budget = app.screen
        summary = str(budget.query_one("#summary", Static).render())
        assert "parameters" in summary and "tokens/s" in summary and "epochs" in summary and "MB" in summary
        table = budget.query_one(DataTable)
        planned = table.get_cell("train.time_budget_s", "planned")
        assert str(planned) == "120" and "yellow" in str(planned.style)  # changed: highlighted
        assert str(table.get_cell("train.time_budget_s", "current")) == "0"
        await pilot.press("a")
        await wait_for(lambda: app.screen is config_screen, pilot)
        assert config_screen.config.train.time_budget_s == 120
        assert cell(config_screen, "train.time_budget_s") == "120.0"
        assert config_screen.config.model.num_dims == budget.planned.model.num_dims


async def test_a_bad_budget_is_named_and_nothing_is_planned():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_budget(app, pilot, "5 parsecs")
        await wait_for(lambda: "unknown unit 'parsecs'" in state(app), pilot)
        assert app.screen.planned is None
        await pilot.press("escape")


async def test_a_budget_too_short_says_the_shortest_that_works(monkeypatch):
    monkeypatch.setattr("engine.planner.calibrate.calibrate", lambda **kwargs: fake_calibration())
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_budget(app, pilot, "0.001")  # upstream LightLM's example: 3.6 seconds
        await wait_for(lambda: "give at least" in state(app), pilot)
        assert app.screen.planned is None  # nothing to apply


async def test_apply_and_start_trains_the_planned_config_on_time(monkeypatch, tiny_run_config):
    import dataclasses
    import time
    from pathlib import Path

    from engine.config import load_config

    monkeypatch.setattr("engine.planner.calibrate.calibrate", lambda **kwargs: fake_calibration())
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        base = tiny_run_config()
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, source="python-docs"))
        await open_config(app, pilot, base)
        await pilot.press("b")
        await wait_for(lambda: isinstance(app.screen, BudgetScreen), pilot)
        app.screen.query_one("#budget", Input).value = "20s"
        await pilot.press("enter")
        await wait_for(lambda: state(app).startswith("plan for 20s"), pilot)
        planned = app.screen.planned
        assert planned.train.time_budget_s == 20 and planned.model != base.model  # the plan resized it
        started = time.monotonic()
        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), pilot)
        monitor = app.screen
        await wait_for(lambda: monitor.view.finished is not None, pilot, timeout=60)
        seen_s = time.monotonic() - started
        finished = monitor.view.finished
        assert finished.status == "completed"
        # The run trained the planned config: the run directory's config is the plan.
        run_config = load_config(Path(monitor.view.run_dir) / "config.toml")
        assert run_config.model == planned.model
        assert dataclasses.replace(run_config.train, runs_dir="") == dataclasses.replace(planned.train, runs_dir="")
        assert monitor.view.params > 0 and run_config.data.source == "python-docs"
        # On time, set-up included (the budget counts from the trainer's start), and not long
        # before: training stops only when one more step and the final evaluation and
        # checkpoint would not fit.
        assert 20 - 4 <= finished.wall_s <= 20.5 and seen_s <= 20 + 1.5, (finished.wall_s, seen_s)
