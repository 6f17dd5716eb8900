"""The Runs screen: lists runs with status and best bpb, opens, resumes and exports them."""

import torch
from textual.widgets import DataTable

from engine.runs.events import EvalResult, RunFinished
from engine.runs.run_dir import EventLog, list_runs, read_events, summarize_run
from engine.train.trainer import Trainer, TrainControl
from lightlm_tui.app import make_app
from lightlm_tui.screens.monitor import MonitorScreen
from tui_helpers import wait_for


def make_run(config, run_dir, stop_after=None):
    log, control = EventLog(run_dir), TrainControl()

    def emit(event):
        log.write(event)
        if stop_after is not None and event.type == "step" and event.step >= stop_after:
            control.stop.set()

    Trainer(config, run_dir, emit, control, threads=1).run()
    log.close()


def test_run_summaries_come_from_the_event_log(tiny_run_config, tmp_path):
    make_run(tiny_run_config(max_steps=20, eval_interval=10), tmp_path / "runs" / "done")
    make_run(tiny_run_config(max_steps=200, eval_interval=0), tmp_path / "runs" / "halfway", stop_after=5)
    runs = {r.name: r for r in list_runs(tmp_path / "runs")}
    assert runs["done"].status == "completed" and runs["done"].step == 20
    evals = [e.val_bpb for e in read_events(tmp_path / "runs" / "done") if isinstance(e, EvalResult)]
    assert len(evals) == 2 and runs["done"].best_val_bpb == min(evals)
    # The best evaluation, not the last one: a log whose best came mid-run.
    log = EventLog(tmp_path / "runs" / "overfit")
    for step, bpb in ((10, 2.0), (20, 1.5), (30, 1.7)):
        log.write(EvalResult(step, bpb * 0.7, bpb, 2.0))
    log.write(RunFinished("completed", 30, 1.7 * 0.7, 1.7, 1.0))
    log.close()
    assert summarize_run(tmp_path / "runs" / "overfit").best_val_bpb == 1.5
    assert runs["halfway"].status == "stopped" and runs["halfway"].total_steps == 200


async def test_runs_screen_lists_opens_and_resumes(tiny_run_config, tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(tiny_run_config(max_steps=30, eval_interval=0), runs_dir / "halfway", stop_after=10)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.action_runs(runs_dir)
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count == 1, pilot)
        row = [str(c) for c in screen.query_one(DataTable).get_row_at(0)]
        assert row[0] == "halfway" and row[1] == "stopped" and row[2] == "10 / 30"
        await pilot.press("enter")  # open in the Monitor
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), pilot)
        await wait_for(lambda: app.screen.view.finished is not None, pilot)
        assert app.screen.view.finished.status == "stopped"
        await pilot.press("escape")  # back to Runs
        await pilot.pause()
        await pilot.press("r")  # resume from the checkpoint to the end
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.bridge is not None, pilot)
        monitor = app.screen
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert monitor.view.finished.status == "completed" and monitor.view.finished.step == 30
        await pilot.press("escape")  # back to Runs
        await pilot.pause()
        await pilot.press("x")  # choose the format: Hugging Face is highlighted first
        await pilot.pause()
        await pilot.press("enter")  # export on the engine thread
        exported = runs_dir / "halfway" / "export" / "hf"
        await wait_for(lambda: (exported / "model.safetensors").is_file(), pilot)
    # The export holds the resumed run's final (step 30) weights, under Llama's names.
    from safetensors.torch import load_file

    from engine.runs.trained_run import load_run
    from engine.model.hf_compat import from_hf_state_dict

    final = load_run(runs_dir / "halfway")
    assert final.step == 30
    weights = from_hf_state_dict(load_file(exported / "model.safetensors"))
    ours = final.model.state_dict()
    assert weights.keys() == ours.keys()
    assert all(torch.equal(weights[name], ours[name]) for name in ours)
