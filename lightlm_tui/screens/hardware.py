"""The first screen: what this machine offers for training, check by check.

Continue (Enter or c) pressed while the checks still run is kept: the screen moves on once
they end, rather than dropping the key.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

STATUS_STYLE = {"ok": ("ok", "bold green"), "warn": ("warn", "bold yellow"), "fail": ("FAIL", "bold red")}
STATUS_WIDTH, NAME_WIDTH = 6, 22
# Cell padding and the scrollbar: what the table takes beyond its columns' widths.
TABLE_CHROME = 8


def run_probe() -> object:
    """The engine's hardware report (imports torch: call it off the UI thread)."""
    from engine.machine.hardware import probe

    return probe()


class HardwareScreen(Screen):
    """Runs `lightlm-tui check` in a worker thread and shows every check with its sentence."""

    # Enter is the screen's (priority): the table's own Enter does nothing while it has no rows.
    BINDINGS = [Binding("c", "continue", "Continue"), Binding("r", "recheck", "Re-check"),
                Binding("enter", "continue", "Continue", show=False, priority=True)]
    DEFAULT_CSS = """
    HardwareScreen #summary { padding: 0 1; height: auto; }
    HardwareScreen DataTable { height: 1fr; }
    """

    def __init__(self, probe: Callable[[], object] = run_probe) -> None:
        super().__init__()
        self.probe = probe
        self.report = None
        self.checking = False
        self.continue_when_checked = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Checking this machine...", id="summary")
        yield DataTable(id="checks", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "LightLM - hardware"
        table = self.query_one(DataTable)
        table.add_column("status", key="status", width=STATUS_WIDTH)
        table.add_column("check", key="check", width=NAME_WIDTH)
        table.add_column("finding", key="finding")
        self.check_machine()

    def action_continue(self) -> None:
        if self.checking:
            self.continue_when_checked = True
            self.query_one("#summary", Static).update("Checking this machine... (continues once the checks end)")
            return
        self.app.show_first_run()

    def action_recheck(self) -> None:
        self.query_one("#summary", Static).update("Checking this machine...")
        self.check_machine()

    def check_machine(self) -> None:
        self.checking = True
        self._probe()

    @work(thread=True, exclusive=True, group="hardware-probe")
    def _probe(self) -> None:
        # One call back to the UI per probe (not per step), so call_from_thread is fine here.
        report = self.probe()
        self.app.call_from_thread(self._checked, report)

    def _checked(self, report) -> None:
        self.checking = False
        self.show_report(report)
        if self.continue_when_checked:
            self.continue_when_checked = False
            self.action_continue()

    def on_resize(self) -> None:
        if self.report is not None:
            self.show_report(self.report)  # re-wrap the findings to the new width

    def show_report(self, report) -> None:
        self.report = report
        table = self.query_one(DataTable)
        table.clear()
        # Findings wrap to the space left, so nothing is cut off at 80 columns.
        width = max(20, self.size.width - STATUS_WIDTH - NAME_WIDTH - TABLE_CHROME)
        for check in report.checks:
            label, style = STATUS_STYLE.get(check.status, (check.status, ""))
            finding = textwrap.fill(check.sentence, width)
            table.add_row(Text(label, style=style), check.name, finding, height=finding.count("\n") + 1)
        counts = {s: sum(c.status == s for c in report.checks) for s in ("ok", "warn", "fail")}
        verdict = {"ok": "Ready to train.", "warn": "Ready to train (see the warnings).",
                   "fail": "Fix the failed checks before training."}[report.worst]
        self.query_one("#summary", Static).update(
            f"{verdict}  {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} failed.  "
            "Enter / c: continue, r: re-check"
        )
