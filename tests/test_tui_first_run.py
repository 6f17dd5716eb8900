"""The first run: Hardware, Enter, and the Config screen offers a run sized for 5 minutes on
this machine by the planner, and says how long it takes before Start."""

from textual.widgets import DataTable, Static

from lightlm_tui.app import make_app
from lightlm_tui.screens.config import FIRST_RUN_BUDGET_S, ConfigScreen, run_length
from tui_helpers import wait_for


def message(screen) -> str:
    return str(screen.query_one("#message", Static).render())


def side(screen) -> str:
    return str(screen.query_one("#side", Static).render())


async def test_the_first_run_is_planned_for_five_minutes_and_says_so_before_start():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.screen.query_one(DataTable).row_count > 0, pilot)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ConfigScreen), pilot)
        screen = app.screen
        # Until the plan comes the screen says what it is doing (a few seconds, the engine thread).
        await wait_for(lambda: screen.planning_for is None or "sizing a 5m run" in message(screen), pilot)
        await wait_for(lambda: screen.planning_for is None, pilot, timeout=180)
        assert screen.config.train.time_budget_s == FIRST_RUN_BUDGET_S == 300
        assert screen.config.name == "plan-5m"
        assert "t trains for 5m (time budget: the clock ends it)" in message(screen)
        assert "run length\n  5m, time budget" in side(screen)
        table = screen.query_one(DataTable)
        assert str(table.get_cell("train.time_budget_s", "value")) == "300.0"


async def test_an_edit_before_the_plan_comes_keeps_the_users_config():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.show_first_run()
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count > 0, pilot)
        assert screen.planning_for == 300
        assert screen.apply_text("model.num_layers", "3")
        assert screen.planning_for is None
        await pilot.pause(0.5)
        # Whatever the engine answers later, the edited laptop preset stays.
        from engine.runs.events import PlanReady

        screen.plan_ready(PlanReady(300.0, {}, [], [], []))
        assert screen.config.name == "laptop" and screen.config.model.num_layers == 3


def test_run_length_says_time_for_a_budget_and_steps_otherwise():
    import dataclasses

    from engine.config import load_preset

    tiny = load_preset("tiny")
    assert "steps; time unknown until it runs" in run_length(tiny)
    budgeted = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, time_budget_s=300.0))
    assert run_length(budgeted) == "5m (time budget: the clock ends it)"


async def test_t_before_the_plan_comes_starts_the_planned_run_once_it_does(tmp_path, monkeypatch):
    from lightlm_tui.screens.monitor import MonitorScreen

    monkeypatch.chdir(tmp_path)  # the first run's runs_dir is ./runs
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.show_first_run()
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count > 0, pilot)
        await pilot.press("t")
        assert screen.planning_for == 300 or isinstance(app.screen, MonitorScreen)
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), pilot, timeout=180)
        monitor = app.screen
        await wait_for(lambda: monitor.view.run_dir, pilot)
        assert monitor.view.time_budget_s == 300  # the planned run, on the clock
        app.bridge.control("stop")  # the test needs its start, not its 5 minutes
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert (tmp_path / "runs").is_dir()
