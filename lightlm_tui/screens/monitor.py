"""The Monitor: a run's progress, metrics, loss / throughput / memory graphs, checkpoints and log.

It shows a live run (events from the engine bridge) or any run directory, by following its
events.jsonl the way `tail -f` does, so a run started headless, under nohup, with --detach or
in a terminal that died can be watched or replayed. Pause / save / eval / stop reach a run in
another process through its control file (engine/runs/control_channel.py). Events only update the
RunView; widgets redraw from it on a timer (4 Hz), so a fast run never floods the screen.

Redrawing is kept cheap because it shares the machine with training (on 2 cores every
millisecond the UI thread runs is one a torch thread waits): a tick with no new event draws
nothing, a widget whose text is unchanged is not touched, and a text update asks Textual for
a layout pass only when its shape (rows, widest row) changed, since a full layout of the
screen costs more than drawing it (bench/ui_overhead.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, RichLog, Sparkline, Static

from engine.runs.control_channel import send_request
from engine.runs.events import DataProgress, event_from_dict
from engine.config.durations import format_duration
from engine.runs.run_dir import liveness
from lightlm_tui.curves import next_smoothing, one_row, smoothing_label
from lightlm_tui.run_view import RunView, decimate
from lightlm_tui.widgets.expert_load import ExpertLoadPanel
from lightlm_tui.widgets.loss_plot import LossPlot

REDRAW_HZ = 4
CHECKPOINTS_SHOWN = 3  # the newest; the metrics column must fit 80x24


def text_shape(text: str) -> tuple[int, int]:
    """(rows, widest row): what decides whether a text's new value can change the layout."""
    rows = text.split("\n")
    return len(rows), max(map(len, rows))


def preparing_text(event: DataProgress) -> str:
    """The status line while the run prepares its data: the phase, and how far it is."""
    if event.fraction is None:
        return f"preparing data: {event.phase}..."
    eta = f", about {format_duration(event.eta_s)} left" if event.eta_s is not None else ""
    return (f"preparing data: {event.phase} {100 * event.fraction:.0f} % of {event.documents_total:,} documents "
            f"({event.mb_per_s:.1f} MB/s{eta})")


class MonitorScreen(Screen):
    """Watches one run. `bridge` (live) enables pause / save / eval / stop."""

    BINDINGS = [
        Binding("p", "pause", "Pause/resume"),
        Binding("s", "save", "Save now"),
        Binding("e", "eval", "Eval now"),
        Binding("x", "stop", "Stop"),
        Binding("g", "playground", "Generate"),
        Binding("l", "experts", "Expert load"),
        Binding("y", "log_y", "Log y"),
        Binding("m", "smoothing", "Smooth"),
        Binding("escape", "back", "Back", show=False),
    ]
    DEFAULT_CSS = """
    MonitorScreen #status { height: 1; padding: 0 1; }
    MonitorScreen #progress { height: 1; padding: 0 1; }
    MonitorScreen #body { height: 1fr; }
    MonitorScreen #metrics { width: 34; padding: 0 1; border-right: solid $primary-darken-2; }
    MonitorScreen #graphs { width: 1fr; padding: 0 1; }
    MonitorScreen .graph-label { height: 1; color: $text-muted; }
    MonitorScreen #loss-plot { height: 1fr; min-height: 8; }
    MonitorScreen .spark-row { height: 1; }
    MonitorScreen .spark-row .graph-label { width: 26; }
    MonitorScreen Sparkline { height: 1; width: 1fr; margin-bottom: 0; }
    MonitorScreen #log { height: 4; border-top: solid $primary-darken-2; overflow-x: hidden; }
    MonitorScreen #experts { display: none; }
    MonitorScreen.show-experts #experts { display: block; }
    MonitorScreen.show-experts #graphs { display: none; }
    """

    def __init__(self, run_dir: Path | None = None, bridge=None) -> None:
        """Follow `run_dir`'s events.jsonl, or (with `bridge`) show the live run the app starts
        for this screen (its events come addressed here: see engine_event)."""
        super().__init__()
        self.view = RunView()
        self.run_dir = Path(run_dir) if run_dir else None
        self.bridge = bridge
        self._offset = 0  # how far into events.jsonl we have read
        self._log_shown = 0
        self._liveness = "unfinished"  # of a followed run's process: running | interrupted | unknown
        self._drawn_state: tuple = ()  # what the last redraw drew from (see redraw)
        self._texts: dict[str, str] = {}  # each text widget's current text
        self._series: dict[str, object] = {}  # each sparkline's and the progress bar's current data

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("waiting for the run to start...", id="status")
        yield ProgressBar(id="progress", show_eta=False)
        with Horizontal(id="body"):
            yield Static("", id="metrics")
            with Vertical(id="graphs"):
                yield Label("loss", id="loss-label", classes="graph-label")
                yield LossPlot(id="loss-plot")
                # One row each: a figure and its history, so the loss plot keeps the column.
                with Horizontal(classes="spark-row"):
                    yield Label("tokens/s", id="speed-label", classes="graph-label")
                    yield Sparkline([], id="speed")
                with Horizontal(classes="spark-row"):
                    yield Label("memory", id="memory-label", classes="graph-label")
                    yield Sparkline([], id="memory")
            yield ExpertLoadPanel(id="experts")
        yield RichLog(id="log", wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "LightLM - monitor"
        if self.run_dir is not None:
            self.follow_file()
            self.set_interval(0.5, self.follow_file)
        self.set_interval(1 / REDRAW_HZ, self.redraw)
        self.redraw()

    # ----- input --------------------------------------------------------------------------
    def engine_event(self, event) -> None:
        """Fold an event of this screen's live run into the view (the next redraw shows it)."""
        self.view.apply(event)

    def follow_file(self) -> None:
        path = self.run_dir / "events.jsonl"
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as handle:
            handle.seek(self._offset)
            while True:
                line = handle.readline()
                if not line.endswith("\n"):
                    break  # a line still being written: read it whole next time
                self._offset = handle.tell()
                try:
                    self.view.apply(event_from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue
        if self.view.finished is None:
            self._liveness = liveness(*self.view.process)

    # ----- drawing ------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> None:
        view = self.view
        if self._redraw_state() == self._drawn_state and not force:
            return  # nothing new since the last tick
        self._set_text("#status", self._status_line())
        if view.last is not None and view.last.progress > 0:  # a time budget: time decides, not steps
            progress = (1000, round(1000 * view.last.progress))
        else:
            progress = (max(1, view.total_steps), view.last.step if view.last else 0)
        if self._series.get("progress") != progress:
            self._series["progress"] = progress
            self.query_one("#progress", ProgressBar).update(total=progress[0], progress=progress[1])
        self._set_text("#metrics", self._metrics_text())
        columns = max(10, self.query_one("#speed", Sparkline).size.width)
        self._draw_loss()
        if self.has_class("show-experts"):
            m = view.last
            self.query_one("#experts", ExpertLoadPanel).show(
                m.expert_load if m else None, m.expert_max_violation if m else None, m.expert_dead if m else None)
        for key, series in (("speed", view.tokens_per_s), ("memory", view.ram_mb)):
            values = decimate(series, columns)
            if self._series.get(key) != values:
                self._series[key] = values
                self.query_one(f"#{key}", Sparkline).data = values
            if values:
                label = "tokens/s" if key == "speed" else "memory MB"
                self._set_text(f"#{key}-label",
                               f"{label} {series[-1][1]:,.0f} ({min(values):,.0f}-{max(values):,.0f})")
        log = self.query_one("#log", RichLog)
        lines = list(view.log)
        width = log.scrollable_content_region.width
        if width >= 20:  # else not laid out yet: the lines are written once their width is known
            for line in lines[self._log_shown:]:
                log.write(one_row(line, width))  # one row each: a long path is shortened, not wrapped
            self._log_shown = len(lines)
        self._drawn_state = self._redraw_state()

    def _redraw_state(self) -> tuple:
        """What a redraw draws from: the events folded in, the process's liveness, the panel
        shown, the log lines written, and the widgets' sizes (they settle after the first
        layout, and a finished run sends no event to redraw it at its real width)."""
        return (self.view.version, self._liveness, self.has_class("show-experts"), self._log_shown,
                self.query_one("#loss-plot").size, self.query_one("#speed").size,
                self.query_one("#log", RichLog).scrollable_content_region.width)

    def _set_text(self, selector: str, text: str) -> None:
        """Show `text` in a Static or Label, touching it only if it changed, and asking for a
        layout pass only if its shape did."""
        old = self._texts.get(selector)
        if old == text:
            return
        self._texts[selector] = text
        self.query_one(selector, Static).update(text, layout=old is None or text_shape(old) != text_shape(text))

    def _draw_loss(self) -> None:
        view = self.view
        plot = self.query_one("#loss-plot", LossPlot)
        if plot.show(view.loss, view.val_loss, view.total_steps):
            val = f", val {view.val_loss[-1][1]:.3f}" if view.val_loss else ""
            self._set_text("#loss-label", f"train {view.loss[-1][1]:.3f}{val} | {plot.mode_text()} (y, m)")

    def _status_line(self) -> str:
        view = self.view
        if view.finished is not None:
            f = view.finished
            figures = f" | val bpb {f.val_bpb:.4f}" if f.val_bpb is not None else ""
            return f"finished ({f.status}) at step {f.step} in {format_duration(f.wall_s)}{figures}"
        if self.bridge is None and self._liveness == "interrupted":
            step = view.last.step if view.last else 0
            return (f"interrupted at step {step}: its process (pid {view.process[0]}) is gone; "
                    f"resume with `lightlm-tui resume {view.run_dir}`")
        if view.last is None and view.preparing is not None and not view.run_dir:
            return preparing_text(view.preparing)
        if view.last is None:
            return f"starting {view.run_dir}..." if view.run_dir else "waiting for the run to start..."
        state = "paused" if view.paused else "training"
        if view.time_budget_s:
            return (f"{state}: step {view.last.step} (about {view.total_steps} planned) | budget "
                    f"{format_duration(view.time_budget_s)}, {format_duration(view.last.eta_s)} left | {view.run_dir}")
        return (f"{state}: step {view.last.step}/{view.total_steps} | ETA {format_duration(view.last.eta_s)}"
                f" | {view.run_dir}")

    def _metrics_text(self) -> str:
        view, m = self.view, self.view.last
        if m is None:
            return ""
        lines = [
            f"step      {m.step:,} / {view.total_steps:,}",
            *([f"trainable {view.trainable_params:,} of {view.params:,}"]
              if 0 < view.trainable_params < view.params else []),
            f"epoch     {m.epoch:.2f}",
            f"loss      {m.loss:.4f}" + (f" + aux {m.aux_loss:.4f}" if m.aux_loss is not None else ""),
            f"lr        {m.lr:.2e}",
            f"grad norm {m.grad_norm:.3f}",
            f"tokens/s  {m.tokens_per_s:,.0f}",
            f"MFU       {m.mfu:.0%}",
            f"RAM       {m.ram_mb:,.0f} MB",
        ]
        if m.vram_mb:
            lines.append(f"VRAM      {m.vram_mb:,.0f} MB (peak {m.vram_peak_mb:,.0f})")
        if m.gpu_util is not None:
            lines.append(f"GPU       {m.gpu_util:.0f} %")
        if m.expert_max_violation:
            dead = sum(m.expert_dead or [])
            lines.append(f"experts   vio {max(m.expert_max_violation):.2f}{f', {dead} dead' if dead else ''} (l)")
        if view.last_eval is not None:
            e = view.last_eval
            lines.append(f"val loss  {e.val_loss:.4f} (step {e.step})")
            lines.append(f"val bpb   {e.val_bpb:.4f}")
        if view.micro_batch is not None:
            lines.append(f"micro-batch {view.micro_batch.micro_batch_size} (OOM x{view.micro_batch.times})")
        if view.skipped_steps:
            lines.append(f"skipped   {view.skipped_steps} non-finite step{'s' if view.skipped_steps > 1 else ''}")
        if view.rolled_back is not None:
            r = view.rolled_back
            lines.append(f"rolled back {r.from_step}->{r.to_step}, lr x{r.lr_scale:g}")
        if view.checkpoints:
            shown = CHECKPOINTS_SHOWN - (1 if m.expert_max_violation else 0)  # the experts line needs a row
            older = len(view.checkpoints) - shown
            lines.append(f"checkpoints{f' (+{older} older)' if older > 0 else ''}")
            lines += [f"  step {c.step:<8,} {c.reason}" for c in view.checkpoints[-shown:]]
        return "\n".join(lines)

    # ----- keys ---------------------------------------------------------------------------
    def _control(self, name: str) -> None:
        if self.bridge is not None:
            if self.bridge.busy and self.view.finished is None:
                self.bridge.control(name)
            else:
                self.notify("the run has ended; nothing to control", severity="warning")
            return
        # A run in another process: ask through its control file; its log line confirms.
        if self.view.finished is not None or self._liveness == "interrupted":
            self.notify("the run is not training; resume it with `lightlm-tui resume RUN_DIR`", severity="warning")
            return
        send_request(self.run_dir, name)
        self.notify(f"{name} requested; the run applies it after its current step")

    def action_pause(self) -> None:
        self._control("resume" if self.view.paused else "pause")

    def action_save(self) -> None:
        self._control("save")

    def action_eval(self) -> None:
        self._control("eval")

    def action_experts(self) -> None:
        """Swap the graphs for the expert-load panel and back."""
        if not self.has_class("show-experts") and (self.view.last is None or not self.view.last.expert_load):
            self.notify("no expert loads: this run is not a mixture-of-experts run (or has not reported yet)",
                        severity="warning")
            return
        self.toggle_class("show-experts")
        self.redraw(force=True)

    def action_log_y(self) -> None:
        """The loss plot's y axis: linear or log."""
        plot = self.query_one("#loss-plot", LossPlot)
        plot.log_y = not plot.log_y
        self._draw_loss()

    def action_smoothing(self) -> None:
        """Smooth the train curve: off, then a debiased EMA of 0.6, 0.9, 0.99 (val stays raw)."""
        plot = self.query_one("#loss-plot", LossPlot)
        plot.smoothing = next_smoothing(plot.smoothing)
        self._draw_loss()
        self.notify(f"train curve: {smoothing_label(plot.smoothing)}", timeout=2)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # not when the Monitor is the app's first screen
            self.app.pop_screen()

    def action_playground(self) -> None:
        run_dir = self.run_dir or (Path(self.view.run_dir) if self.view.run_dir else None)
        if run_dir is None or not self.view.checkpoints and self.view.finished is None:
            self.notify("no checkpoint to sample from yet; press s to save one", severity="warning")
            return
        self.app.show_playground(run_dir)

    def action_stop(self) -> None:
        from lightlm_tui.dialogs.confirm import ConfirmDialog

        def decided(yes: bool | None) -> None:
            if yes:
                self._control("stop")

        self.app.push_screen(ConfirmDialog("Stop the run? A checkpoint is saved and it can be resumed."), decided)
