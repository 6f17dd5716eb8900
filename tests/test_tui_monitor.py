"""The Monitor, driven with the pilot: replaying a run directory and watching a live run."""

from textual.widgets import Static

from engine.train.trainer import Trainer
from lightlm_tui.app import make_app
from lightlm_tui.launcher import main as launcher_main
from lightlm_tui.screens.monitor import MonitorScreen
from tui_helpers import wait_for




def status_text(app) -> str:
    from textual.css.query import NoMatches

    try:
        return str(app.screen.query_one("#status", Static).render())
    except NoMatches:  # the screen is still being mounted
        return ""


async def test_monitor_replays_a_finished_run(tiny_run_config, tmp_path):
    from engine.runs.run_dir import EventLog

    run_dir = tmp_path / "run"
    log = EventLog(run_dir)
    Trainer(tiny_run_config(max_steps=30), run_dir, log.write, threads=1).run()
    log.close()
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: "finished (completed) at step 30" in status_text(app), pilot)
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        metrics = str(screen.query_one("#metrics", Static).render())
        assert "step      30 / 30" in metrics and "val bpb" in metrics
        assert "checkpoints\n  step 30       final" in metrics
        assert len(screen.view.loss) == 30 and screen.view.loss[-1][1] < screen.view.loss[0][1]
        # A replayed run cannot be controlled: after the confirmation the app says so, and no
        # request reaches the run directory's control channel.
        from lightlm_tui.dialogs.confirm import ConfirmDialog

        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("y")
        await wait_for(lambda: app.screen is screen, pilot)
        await wait_for(lambda: any("the run is not training" in n.message for n in app._notifications), pilot)
        assert not (run_dir / "control.jsonl").exists()
        assert "finished (completed) at step 30" in status_text(app)


async def test_live_run_from_the_app_shows_falling_loss_and_finishes(tiny_run_config):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.start_run(tiny_run_config(max_steps=80, eval_interval=40))
        await wait_for(lambda: "finished (completed)" in status_text(app), pilot)
        view = monitor.view
        assert view.last.step == 80 and view.finished.status == "completed"
        assert view.loss[-1][1] < view.loss[0][1] - 0.5
        assert len(view.val_loss) == 2


async def test_stop_asks_first_then_stops_with_a_checkpoint(tiny_run_config):
    from engine.runs.checkpoint import load_latest

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = app.start_run(tiny_run_config(max_steps=100_000, eval_interval=0))
        await wait_for(lambda: monitor.view.last is not None, pilot)
        await pilot.press("x")
        await pilot.press("n")  # changed my mind: it keeps training
        await pilot.pause(0.3)
        assert monitor.view.finished is None
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert monitor.view.finished.status == "stopped"
        assert load_latest(monitor.view.run_dir).state.step == monitor.view.finished.step


async def test_monitor_controls_a_run_in_another_process_through_its_run_dir(tiny_run_config, tmp_path):
    """A run the app did not start (here: a trainer writing events.jsonl) obeys the Monitor's keys."""
    import threading

    from engine.runs.run_dir import EventLog

    run_dir = tmp_path / "elsewhere"
    log = EventLog(run_dir)
    trainer = Trainer(tiny_run_config(max_steps=100_000, log_interval=5, eval_interval=0), run_dir, log.write)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        app = make_app(monitor_dir=run_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: status_text(app).startswith("training: step"), pilot)
            await pilot.press("p")
            await wait_for(lambda: status_text(app).startswith("paused: step"), pilot)
            await pilot.press("p")
            await wait_for(lambda: status_text(app).startswith("training: step"), pilot)
            await pilot.press("x", "y")
            await wait_for(lambda: "finished (stopped)" in status_text(app), pilot)
    finally:
        trainer.control.stop.set()
        thread.join(60)
        log.close()


async def test_monitor_says_when_a_runs_process_is_gone(tmp_path):
    import socket

    from engine.runs.events import RunStarted
    from engine.runs.run_dir import EventLog

    log = EventLog(tmp_path)
    log.write(RunStarted(run_dir=str(tmp_path), params=1, total_steps=10, tokens_per_step=1,
                         pid=1, pid_started=1.0, host=socket.gethostname()))
    log.close()
    app = make_app(monitor_dir=tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_for(lambda: "interrupted at step 0" in status_text(app), pilot)
        assert "lightlm-tui resume" in status_text(app)


def test_monitor_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert launcher_main(["monitor", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


async def test_a_finished_runs_monitor_keeps_its_own_run_when_another_is_resumed(tiny_run_config, tmp_path):
    """Run A finishes in the app; run B (trained elsewhere, stopped halfway) is resumed from the
    Runs screen: B's Monitor goes above A's, and A's Monitor must not take B's events."""
    from textual.widgets import DataTable

    from engine.runs.run_dir import EventLog
    from engine.train.trainer import TrainControl

    runs_dir = tmp_path / "runs"
    run_b, log, control = runs_dir / "b", EventLog(runs_dir / "b"), TrainControl()

    def stop_at_8(event):
        log.write(event)
        if event.type == "step" and event.step >= 8:
            control.stop.set()

    Trainer(tiny_run_config(max_steps=30, eval_interval=0, runs_dir=str(runs_dir)), run_b, stop_at_8, control,
            threads=1).run()
    log.close()

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        monitor_a = app.start_run(tiny_run_config(max_steps=12, eval_interval=0, runs_dir=str(runs_dir)))
        await wait_for(lambda: monitor_a.view.finished is not None, pilot)
        run_a = monitor_a.view.run_dir
        losses_a = list(monitor_a.view.loss)
        runs = app.action_runs(runs_dir)
        await wait_for(lambda: app.screen is runs and runs.query_one(DataTable).row_count == 2, pilot)
        names = [str(runs.query_one(DataTable).get_row_at(i)[0]) for i in range(2)]
        runs.query_one(DataTable).move_cursor(row=names.index("b"))
        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen is not monitor_a, pilot)
        monitor_b = app.screen
        await wait_for(lambda: monitor_b.view.finished is not None, pilot)
        assert monitor_b.view.run_dir == str(run_b) and monitor_b.view.finished.step == 30
        assert monitor_a.view.run_dir == run_a != str(run_b)
        assert list(monitor_a.view.loss) == losses_a and monitor_a.view.finished.step == 12


def just_started_run(run_dir, total_steps: int):
    """A run folder whose events say only that it started."""
    from engine.runs.events import RunStarted
    from engine.runs.run_dir import EventLog

    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1, total_steps=total_steps, tokens_per_step=1))
    log.close()
    return run_dir


async def the_monitor(app, pilot) -> MonitorScreen:
    """The Monitor the app opened, once it has read its run's start."""
    await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.run_dir, pilot)
    return app.screen


async def test_the_loss_plot_keeps_drawing_past_the_series_cap(tmp_path):
    """The series are capped deques: past 20,000 reports their length stops changing, and the
    plot must still redraw for each new point."""
    from textual.widgets import Label

    from engine.runs.events import StepMetrics
    from lightlm_tui.run_view import MAX_POINTS

    app = make_app(monitor_dir=just_started_run(tmp_path, total_steps=50_000))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await the_monitor(app, pilot)
        for step in range(1, MAX_POINTS + 11):
            monitor.view.apply(StepMetrics(step=step, epoch=0.0, loss=5.0, lr=1e-3, grad_norm=1.0,
                                           tokens_per_s=1.0, mfu=0.0, ram_mb=1.0))
        monitor.redraw()
        label = monitor.query_one("#loss-label", Label)
        assert "train 5.000" in str(label.render())
        monitor.view.apply(StepMetrics(step=MAX_POINTS + 11, epoch=0.0, loss=1.234, lr=1e-3, grad_norm=1.0,
                                       tokens_per_s=1.0, mfu=0.0, ram_mb=1.0))
        assert len(monitor.view.loss) == MAX_POINTS  # capped: the length did not change
        monitor.redraw()
        assert "train 1.234" in str(label.render())


async def test_a_redraw_with_nothing_new_touches_no_widget_and_a_new_report_redraws(tmp_path):
    """The Monitor shares the CPU with training: its 4 Hz tick draws only what changed, and a
    text whose shape stays the same is updated without a layout pass."""
    from engine.runs.events import EvalResult, StepMetrics

    app = make_app(monitor_dir=just_started_run(tmp_path, total_steps=100))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await the_monitor(app, pilot)

        def report(step: int, loss: float) -> None:
            monitor.view.apply(StepMetrics(step=step, epoch=0.0, loss=loss, lr=1e-3, grad_norm=1.0,
                                           tokens_per_s=1000.0, mfu=0.0, ram_mb=100.0))

        report(10, 5.0)
        monitor.redraw()
        await pilot.pause()
        metrics = monitor.query_one("#metrics", Static)
        updates = []
        original = metrics.update
        metrics.update = lambda text, layout=True: (updates.append(layout), original(text, layout=layout))
        for _ in range(3):
            monitor.redraw()  # nothing new: nothing drawn
        assert updates == []
        report(20, 4.5)  # same rows, same widths: drawn without a layout pass
        monitor.redraw()
        assert updates == [False] and "loss      4.5000" in str(metrics.render())
        report(30, 4.25)
        monitor.view.apply(EvalResult(step=30, val_loss=4.0, val_bpb=2.0, perplexity=54.6))  # two rows more
        monitor.redraw()
        assert updates == [False, True] and "val bpb   2.0000" in str(metrics.render())
