"""The comparison screen: two or more runs' curves overlaid, then what differs between them.

Val bits/byte (or train loss) of every run against tokens seen, wall time or step (`a` switches
the axis, `v` the curve, `y` log scale), each run in a stable colour named in the legend; under
it a table of the runs' final figures (val bpb, tokens/s, wall time, parameters) and of only
the settings that differ between their config.toml files. Runs are read from their
events.jsonl by a thread that keeps following them, so runs still training update live; the
screen redraws at the Monitor's rate, and only when something changed.

Runs whose tokenizers differ have losses in different units (nats per *their* token): the
screen says so, and the train curve is then drawn in bits/byte too (each run's loss scaled by
its own val bits-per-byte / val-loss ratio).
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from lightlm_tui.run_compare import (
    COLOURS,
    X_AXES,
    X_LABELS,
    RunCurves,
    differing_settings,
    tokenizers_differ,
)
from lightlm_tui.widgets.compare_plot import ComparePlot, decimated

REDRAW_HZ = 4  # as the Monitor
FOLLOW_S = 0.5  # how often the runs' event logs are read for new lines
FIGURES = ("val bpb", "tokens/s", "wall time", "parameters", "status")
NAME_WIDTH = 14


class CompareScreen(Screen):
    """Compares the runs in `run_dirs` (in that order: run i is drawn in COLOURS[i])."""

    BINDINGS = [
        Binding("a", "axis", "X axis"),
        Binding("v", "metric", "Val bpb/train"),
        Binding("y", "log_y", "Log y"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    CompareScreen #note { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    CompareScreen #note.warning { color: $warning; }
    CompareScreen #legend { height: auto; max-height: 2; padding: 0 1; }
    CompareScreen #plot { height: 1fr; min-height: 8; }
    CompareScreen #table { height: auto; max-height: 8; }
    """

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.runs = [RunCurves(Path(p)) for p in run_dirs]
        self.axis = "tokens"
        self.metric = "val_bpb"
        self._drawn: tuple = ()
        self._decimated: dict[int, tuple] = {}  # run index -> (what it was cut from, (xs, ys))
        self._stop = threading.Event()
        # Set by the reader once every run has been read through: drawing before that would
        # redraw the whole comparison once per run read, each time with the GIL the reader needs.
        self._read_once = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="note")
        yield Static("", id="legend")
        yield ComparePlot(id="plot")
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"LightLM - compare {len(self.runs)} runs"
        legend = Text()
        for i, run in enumerate(self.runs):
            legend.append("━━ ", style=COLOURS[i % len(COLOURS)])
            legend.append(f"{run.name}  ")
        self.query_one("#legend", Static).update(legend)
        self.query_one("#note", Static).update(f"reading {len(self.runs)} runs...")
        table = self.query_one(DataTable)
        table.add_column("", key="what", width=24)
        for i, run in enumerate(self.runs):
            table.add_column(Text(run.name[:NAME_WIDTH], style=f"bold {COLOURS[i % len(COLOURS)]}"),
                             key=str(i), width=NAME_WIDTH)
        self.follow_runs()
        self.set_interval(1 / REDRAW_HZ, self.redraw)
        table.focus()

    def on_unmount(self) -> None:
        self._stop.set()

    @work(thread=True, exclusive=True, group="compare-follow")
    def follow_runs(self) -> None:
        """Read every run's new events now and every FOLLOW_S after, until the screen goes."""
        while not self._stop.is_set():
            for run in self.runs:
                run.follow()
            if not self._read_once.is_set():
                self._read_once.set()
                try:
                    self.app.call_from_thread(self.redraw)
                except RuntimeError:  # the app is closing
                    return
            self._stop.wait(FOLLOW_S)

    # ----- drawing ------------------------------------------------------------------------
    def redraw(self, force: bool = False) -> None:
        if not self._read_once.is_set() and not force:
            return
        drawn = (tuple(run.version for run in self.runs), self.axis, self.metric,
                 self.query_one(ComparePlot).log_y, self.size)
        if drawn == self._drawn and not force:
            return
        self._drawn = drawn
        self.query_one("#note", Static).update(self.note_text())
        self.query_one("#note", Static).set_class(tokenizers_differ(self.runs), "warning")
        self._draw_plot()
        self._fill_table()

    def note_text(self) -> str:
        differ = tokenizers_differ(self.runs)
        if self.metric == "val_bpb":
            what = "val bits/byte"
        else:
            what = "train loss in bits/byte" if differ else "train loss (nats/token)"
        note = f"{what} against {X_LABELS[self.axis]}"
        if differ:
            note += (" | tokenizers differ: loss per token is not comparable, so runs are compared on "
                     "bits per byte")
        return note

    def _draw_plot(self) -> None:
        differ = tokenizers_differ(self.runs)
        plot = self.query_one(ComparePlot)
        series = []
        for i, run in enumerate(self.runs):
            # A finished run's curve is cut to the plot's width once, not at every redraw.
            key = (run.version, self.metric, self.axis, differ, plot.columns())
            cached = self._decimated.get(i)
            if cached is None or cached[0] != key:
                cached = self._decimated[i] = (key, decimated(run.series(self.metric, self.axis, differ), key[-1]))
            series.append((COLOURS[i % len(COLOURS)], cached[1], self.metric == "val_bpb"))
        plot.show(series, X_LABELS[self.axis])

    def _fill_table(self) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        figures = [run.figures() for run in self.runs]
        for name in FIGURES:
            table.add_row(Text(name, style="bold"), *[f[name] for f in figures], key=f"figure:{name}")
        settings = differing_settings(self.runs)
        table.add_row(Text(f"settings that differ ({len(settings)})", style="bold underline"),
                      *["" for _ in self.runs], key="section")
        for key, values in settings:
            table.add_row(key, *values, key=key)
        table.move_cursor(row=min(cursor, table.row_count - 1))

    # ----- keys ---------------------------------------------------------------------------
    def action_axis(self) -> None:
        """x: tokens seen, then wall time, then step."""
        self.axis = X_AXES[(X_AXES.index(self.axis) + 1) % len(X_AXES)]
        self.redraw()

    def action_metric(self) -> None:
        self.metric = "train" if self.metric == "val_bpb" else "val_bpb"
        self.redraw()

    def action_log_y(self) -> None:
        plot = self.query_one(ComparePlot)
        plot.log_y = not plot.log_y
        self.redraw()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # not when the comparison is the app's first screen
            self.app.pop_screen()
