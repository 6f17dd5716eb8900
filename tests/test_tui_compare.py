"""The comparison screen, driven with the pilot: runs marked on the Runs screen (or named on the
command line) overlaid in their colours, only the settings that differ, live runs followed,
and tokenizers that differ said and compared on bits per byte."""

import dataclasses
import math

from textual.widgets import DataTable, Static

from engine.config import load_preset, save_config
from engine.runs.events import EvalResult, RunFinished, RunStarted, StepMetrics
from engine.runs.run_dir import EventLog
from lightlm_tui.app import make_app
from lightlm_tui.launcher import main as launcher_main
from lightlm_tui.run_compare import COLOURS, RunCurves, differing_settings
from lightlm_tui.screens.compare import CompareScreen
from lightlm_tui.widgets.compare_plot import ComparePlot
from tui_helpers import wait_for


def fake_run(run_dir, steps=100, speed=1.0, finish=True, tokenizer="bpe", **train):
    """A run directory with a config.toml and events of a falling loss (no training: fast)."""
    config = load_preset("tiny")
    config = dataclasses.replace(config, name=run_dir.name, train=dataclasses.replace(config.train, **train),
                                 data=dataclasses.replace(config.data, tokenizer=tokenizer))
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.toml")
    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1_000_000, total_steps=steps, tokens_per_step=2048))
    for step in range(1, steps + 1):
        loss = 2 + 3 * math.exp(-step * speed / 30)
        log.write(StepMetrics(step=step, epoch=0.0, loss=loss, lr=1e-3, grad_norm=1.0, tokens_per_s=5000.0 * speed,
                              mfu=0.1, ram_mb=500.0, elapsed_s=step * 0.5 / speed, run_dir=str(run_dir)))
        if step % 25 == 0:
            log.write(EvalResult(step=step, val_loss=loss, val_bpb=loss / 2.5, perplexity=math.exp(loss),
                                 run_dir=str(run_dir)))
    if finish:
        log.write(RunFinished(status="completed", step=steps, val_loss=loss, val_bpb=loss / 2.5,
                              wall_s=steps * 0.5 / speed, run_dir=str(run_dir)))
    log.close()
    return run_dir


def table_rows(screen) -> dict[str, list[str]]:
    table = screen.query_one(DataTable)
    return {str(row[0]): [str(c) for c in row[1:]] for row in (table.get_row_at(i) for i in range(table.row_count))}


def note(screen) -> str:
    return str(screen.query_one("#note", Static).render())


async def test_three_finished_runs_show_three_curves_and_only_the_settings_that_differ(tmp_path):
    runs = [fake_run(tmp_path / "runs" / name, speed=speed, learning_rate=lr)
            for name, speed, lr in (("alpha", 1.0, 1e-3), ("beta", 1.5, 3e-3), ("gamma", 2.0, 1e-3))]
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.action_runs(tmp_path / "runs")
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count == 3, pilot)
        await pilot.press("c")  # nothing marked yet: says what to do
        await wait_for(lambda: any("mark two or more runs" in n.message for n in app._notifications), pilot)
        for _ in range(3):
            await pilot.press("space", "down")
        assert sorted(str(screen.query_one(DataTable).get_row_at(i)[0]) for i in range(3)) == \
            ["* alpha", "* beta", "* gamma"]
        await pilot.press("c")
        await wait_for(lambda: isinstance(app.screen, CompareScreen), pilot)
        compare = app.screen
        await wait_for(lambda: "val bpb" in table_rows(compare) and table_rows(compare)["val bpb"][0] != "-", pilot)
        await pilot.pause(0.3)
        plot = compare.query_one(ComparePlot)
        colours = {getattr(d, "line_style", None) or getattr(d, "marker_style", None) for d in plot._datasets}
        assert len(compare.runs) == 3 and colours == set(COLOURS[:3])  # one curve per run, each its colour
        legend = str(compare.query_one("#legend", Static).render())
        for run in runs:
            assert run.name in legend
        rows = table_rows(compare)
        # Only the settings that differ: the learning rate (names, run dirs and caches never count).
        settings = [key for key in rows if "." in key]
        assert settings == ["train.learning_rate"]
        assert sorted(rows["train.learning_rate"]) == ["0.001", "0.001", "0.003"]
        # Columns in the order marked (the Runs screen lists newest first: gamma, beta, alpha).
        speeds = {"alpha": 1.0, "beta": 1.5, "gamma": 2.0}
        order = [speeds[run.name] for run in compare.runs]
        assert [run.name for run in compare.runs] == ["gamma", "beta", "alpha"]
        assert rows["val bpb"] == [f"{(2 + 3 * math.exp(-100 * s / 30)) / 2.5:.4f}" for s in order]
        assert rows["tokens/s"] == [f"{5000 * s:,.0f}" for s in order]
        assert rows["wall time"] == ["25 s", "33 s", "50 s"] and rows["parameters"] == ["1.00M"] * 3
        assert "val bits/byte against tokens seen" in note(compare) and "tokenizers differ" not in note(compare)
        await pilot.press("a")  # x axis: tokens -> wall time -> step
        await wait_for(lambda: "against wall time" in note(compare), pilot)
        assert plot._x_max == 50  # the slowest run's wall time
        await pilot.press("a")
        await wait_for(lambda: "against step" in note(compare), pilot)
        await pilot.press("v")
        await wait_for(lambda: "train loss (nats/token) against step" in note(compare), pilot)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen, pilot)


async def test_a_run_still_training_updates_live_and_tokenizers_that_differ_are_said(tmp_path):
    done = fake_run(tmp_path / "done")
    live = fake_run(tmp_path / "live", steps=10, finish=False, tokenizer="bytes")
    app = make_app(compare_dirs=[done, live])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, CompareScreen), pilot)
        compare = app.screen
        await wait_for(lambda: "tokenizers differ" in note(compare), pilot)
        assert "compared on bits per byte" in note(compare)
        assert "data.tokenizer" in table_rows(compare)
        await wait_for(lambda: table_rows(compare)["wall time"][1] == "5 s so far", pilot)
        log = EventLog(live)  # the live run goes on
        for step in range(11, 31):
            log.write(StepMetrics(step=step, epoch=0.0, loss=2.5, lr=1e-3, grad_norm=1.0, tokens_per_s=5000.0,
                                  mfu=0.1, ram_mb=500.0, elapsed_s=step * 0.5, run_dir=str(live)))
        log.write(EvalResult(step=30, val_loss=2.5, val_bpb=1.0, perplexity=12.0, run_dir=str(live)))
        log.close()
        await wait_for(lambda: table_rows(compare)["val bpb"][1] == "1.0000", pilot)
        assert table_rows(compare)["wall time"][1] == "15 s so far"
        # The train curve, with tokenizers differing, is drawn in bits/byte (loss x bpb / val loss).
        await pilot.press("v")
        await wait_for(lambda: "train loss in bits/byte" in note(compare), pilot)
        assert compare.runs[1].series("train", "step", in_bits_per_byte=True)[-1] == (30, 1.0)


def test_differing_settings_lists_a_setting_one_run_lacks(tmp_path):
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b", max_steps=7)
    assert [key for key, _ in differing_settings([RunCurves(a), RunCurves(b)])] == ["train.max_steps"]


def test_compare_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert launcher_main(["compare", str(run)]) == 2
    assert "compare needs two or more run directories" in capsys.readouterr().err
    assert launcher_main(["compare", str(run), str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_a_damaged_log_is_read_line_by_line_and_a_half_written_line_waits(tmp_path):
    """A log is parsed in one go; garbage lines make it fall back to line by line, skipping
    them, and a last line still being written is read once it is whole."""
    run_dir = fake_run(tmp_path / "damaged", steps=50, finish=False)
    events = run_dir / "events.jsonl"
    whole = events.read_bytes()
    lines = whole.splitlines(keepends=True)
    events.write_bytes(b"".join(lines[:10]) + b"not json\n{\"type\": \"step\", \"ste\n" + b"".join(lines[10:]))
    run = RunCurves(run_dir)
    assert run.follow()
    assert [p.step for p in run.train] == list(range(1, 51))  # every good line, the bad ones skipped
    with events.open("ab") as handle:
        handle.write(b'{"type": "step", "step": 51, "loss": 2.0, "tokens_per_s": 1.0, "elapsed')
    assert not run.follow()  # the half-written line is not read yet
    with events.open("ab") as handle:
        handle.write(b'_s": 26.0}\n')
    assert run.follow() and run.train[-1].step == 51 and run.train[-1].wall == 26.0
