"""Curves and sentences readable at 80x24: the loss plot gets the graph column, the
x axis follows the data, `y` (log y) and `m` (smoothing, train curve only) change what is
drawn, log lines take one row each, and every dialog shows its whole sentence."""

import math
import re

from textual.containers import Vertical
from textual.widgets import RichLog, Sparkline

from engine.runs.events import EvalResult, LogLine, RunStarted, StepMetrics
from engine.runs.run_dir import EventLog
from lightlm_tui.app import make_app
from lightlm_tui.curves import ema_debiased, one_row
from lightlm_tui.dialogs.confirm import ConfirmDialog
from lightlm_tui.run_view import decimate_points
from lightlm_tui.screens.monitor import MonitorScreen
from lightlm_tui.widgets.loss_plot import LossPlot
from tui_helpers import wait_for

STOP_SENTENCE = "Stop the run? A checkpoint is saved and it can be resumed."


def stopped_early_run(run_dir, steps=120, planned=1000):
    """A run that reported `steps` of `planned` steps: a noisy falling loss, two evaluations."""
    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1, total_steps=planned, tokens_per_step=2048))
    for step in range(1, steps + 1):
        loss = 2 + 3 * math.exp(-step / 40) + (0.3 if step % 2 else -0.3)
        log.write(StepMetrics(step=step, epoch=0.0, loss=loss, lr=1e-3, grad_norm=1.0, tokens_per_s=5000.0 + step,
                              mfu=0.1, ram_mb=500.0, elapsed_s=step * 0.5, run_dir=str(run_dir)))
        if step % 60 == 0:
            log.write(EvalResult(step=step, val_loss=loss, val_bpb=loss / 2.5, perplexity=1.0, run_dir=str(run_dir)))
    log.write(LogLine(level="info", text="saved checkpoint to " + str(run_dir / ("a-very-long-folder-name-" * 6))
                      + "/checkpoints/step_000120 after 60.0 s", run_dir=str(run_dir)))
    log.close()
    return run_dir


def screen_text(app, dialog: bool = False) -> str:
    """What the current screen shows, as text (borders and block characters blanked); with
    `dialog`, only the modal's box (the screen under it shows beside it)."""
    lines = [strip.text for strip in app.screen._compositor.render_strips()]
    if dialog:
        box = app.screen.query_one(Vertical).region
        lines = [line[box.x: box.right] for line in lines[box.y: box.bottom]]
    return "\n".join(re.sub(r"[^\w?.,:;'()/·* -]", " ", line) for line in lines)


def joined(text: str) -> str:
    """The screen's text as one line: a sentence wrapped over rows reads whole again."""
    return " ".join(text.split())


def train_and_val(plot: LossPlot):
    line, *scatter = plot._datasets
    return list(line.y), [list(s.y) for s in scatter]


async def test_log_y_and_smoothing_change_what_is_drawn_and_val_stays_raw(tmp_path):
    run_dir = stopped_early_run(tmp_path)
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and len(app.screen.view.loss) == 120, pilot)
        monitor = app.screen
        plot = monitor.query_one(LossPlot)
        steps = [p[0] for p in monitor.view.loss]
        losses = [p[1] for p in monitor.view.loss]
        raw_val = [p[1] for p in monitor.view.val_loss]

        def expected(values):  # what the plot draws: about two points per column
            return list(decimate_points(list(zip(steps, values)), max(10, plot.size.width - 8))[1])

        await wait_for(lambda: plot._datasets and train_and_val(plot)[0] == expected(losses), pilot)
        assert train_and_val(plot)[1] == [raw_val]
        assert "raw" in str(monitor.query_one("#loss-label").render())
        await pilot.press("y")
        log_train, log_val = train_and_val(plot)
        assert log_train == [math.log10(v) for v in expected(losses)]
        assert log_val == [[math.log10(v) for v in raw_val]]
        assert "log y" in str(monitor.query_one("#loss-label").render())
        await pilot.press("y", "m")  # back to linear; smoothing on (EMA 0.6)
        smooth_train, smooth_val = train_and_val(plot)
        assert smooth_val == [raw_val]  # the val points are drawn as measured
        assert smooth_train == expected(ema_debiased(losses, 0.6)) != expected(losses)
        assert "EMA 0.6" in str(monitor.query_one("#loss-label").render())
        await pilot.press("m", "m", "m")  # 0.9, 0.99, then off again
        assert train_and_val(plot)[0] == expected(losses)


async def test_at_80x24_the_plot_gets_the_column_and_the_x_axis_follows_the_data(tmp_path):
    run_dir = stopped_early_run(tmp_path)
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.log, pilot)
        monitor = app.screen
        plot = monitor.query_one(LossPlot)
        await wait_for(lambda: plot._datasets, pilot)
        graphs_height = monitor.query_one("#graphs").size.height
        assert plot.size.height >= graphs_height - 3  # label row, two one-row sparklines
        assert all(s.size.height == 1 for s in monitor.query(Sparkline))
        assert plot._x_max == 120  # the data's end, not the 1,000 planned steps
        assert "planned end 1,000" in plot._x_label
        text = screen_text(app)
        assert "tokens/s 5,120" in text and "memory MB 500" in text
        # The long log line takes one row: shortened in the middle, never wrapped.
        log = monitor.query_one(RichLog)
        await wait_for(lambda: log.lines, pilot)
        assert len(log.lines) == 1 and "..." in log.lines[0].text and log.lines[0].text.endswith("after 60.0 s")
        assert len(log.lines[0].text) <= log.size.width


async def test_every_dialog_shows_its_whole_sentence_at_80x24(tmp_path):
    run_dir = stopped_early_run(tmp_path)
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.loss, pilot)
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await wait_for(lambda: STOP_SENTENCE in joined(screen_text(app, dialog=True)), pilot, timeout=10)
        await pilot.press("n")
        await pilot.press("question_mark")
        await wait_for(lambda: "Ctrl P opens the command palette with every action. Esc closes."
                       in joined(screen_text(app, dialog=True)), pilot, timeout=10)
        await pilot.press("escape")
        config = app.show_config()
        await wait_for(lambda: app.screen is config, pilot)
        await pilot.press("d")
        await wait_for(lambda: "Data source: an embedded corpus, a file or folder, or a hub dataset id"
                       in joined(screen_text(app, dialog=True)), pilot, timeout=10)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is config, pilot)
        await pilot.press("p")
        await wait_for(lambda: "Start from a preset (Enter picks, Esc cancels):"
                       in joined(screen_text(app, dialog=True)), pilot, timeout=10)


def test_one_row_shortens_the_longest_word_and_keeps_both_ends():
    line = "saved /home/someone/runs/" + "x" * 80 + "/checkpoints/step_000500 in 1.2 s"
    shortened = one_row(line, 60)
    assert len(shortened) <= 60 and shortened.startswith("saved /") and shortened.endswith("in 1.2 s")
    assert one_row("short\nline", 60) == "short line"


def test_ema_is_debiased_like_tensorboard():
    assert ema_debiased([5.0, 5.0, 5.0], 0.9) == [5.0, 5.0, 5.0]  # no pull towards zero at the start
    # ema = 0.5 * 0.5 + 0.5 * 3 = 1.75, debiased by 1 - 0.5^2 = 0.75
    assert ema_debiased([1.0, 3.0], 0.5) == [1.0, 1.75 / 0.75]
    assert ema_debiased([1.0, 2.0], 0.0) == [1.0, 2.0]
