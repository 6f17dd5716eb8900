"""The Textual application: screens, global keys, and the way in (`run_app`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine import api
from engine.config import ConfigError, RunConfig, load_preset
from engine.errors import UserFacingError
from engine.machine.paths import cache_dir
from engine.runs.events import EngineError, ExportFinished

from lightlm_tui.bridge import EngineBridge, EngineEvent
from lightlm_tui.commands import binding_commands
from lightlm_tui.output_guard import caught_summary, stray_output_to
from lightlm_tui.screens.config import FIRST_RUN_BUDGET_S, ConfigScreen
from lightlm_tui.screens.hardware import HardwareScreen
from lightlm_tui.screens.monitor import MonitorScreen
from lightlm_tui.screens.playground import PlaygroundScreen
from lightlm_tui.screens.runs import RunsScreen


APP_OUTPUT_LOG = "app-output.log"  # under the cache dir: what libraries wrote while the app ran


class LightLMApp(App):
    """LightLM TUI. Starts on the hardware screen, on the Monitor of `monitor_dir`, or on a
    comparison of `compare_dirs`."""

    TITLE = "LightLM"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("o", "runs", "Runs"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False),
    ]

    def __init__(self, monitor_dir: Path | None = None, compare_dirs: list[Path] | None = None) -> None:
        super().__init__()
        self.monitor_dir = monitor_dir
        self.compare_dirs = compare_dirs
        self._bridge: EngineBridge | None = None

    @property
    def bridge(self) -> EngineBridge:
        """The engine thread, started on first use (the first frame never waits for it)."""
        if self._bridge is None:
            self._bridge = EngineBridge(self)
        return self._bridge

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from binding_commands(screen)

    def on_mount(self) -> None:
        if self.compare_dirs:
            self.show_compare(self.compare_dirs)
        else:
            self.push_screen(MonitorScreen(self.monitor_dir) if self.monitor_dir else HardwareScreen())

    def show_compare(self, run_dirs: list[Path]) -> Screen:
        """Two or more runs' curves overlaid, and the settings that differ between them."""
        from lightlm_tui.screens.compare import CompareScreen

        screen = CompareScreen(run_dirs)
        self.push_screen(screen)
        return screen

    def show_config(self, config: RunConfig | None = None, plan_budget_s: float = 0.0) -> ConfigScreen:
        """The Config screen, on `config` or the laptop preset; with `plan_budget_s`, sized for
        that budget on this machine by the planner (on the engine thread) once it answers."""
        import psutil

        screen = ConfigScreen(config or load_preset("laptop"), ram_bytes=psutil.virtual_memory().total,
                              plan_budget_s=plan_budget_s)
        self.push_screen(screen)
        return screen

    def show_first_run(self) -> ConfigScreen:
        """Where the Hardware screen leads: the laptop preset's settings, planned for a
        5-minute budget on this machine, so `t` trains for 5 minutes whatever the CPU or GPU."""
        return self.show_config(plan_budget_s=FIRST_RUN_BUDGET_S)

    def start_run(self, config: RunConfig) -> MonitorScreen | None:
        """Train `config` and show its Monitor: on the engine thread, or with train.processes > 1
        as DDP ranks in the background, which the Monitor follows and controls through the run dir."""
        return self._run(config, lambda: api.start_run(config, detach=True),
                         lambda monitor: self.bridge.start_run(config, owner=monitor))

    def resume_run(self, run_dir: Path, config: RunConfig) -> MonitorScreen | None:
        """Continue `run_dir` (whose recorded config is `config`) from its latest checkpoint."""
        return self._run(config, lambda: api.resume_run(run_dir, detach=True),
                         lambda monitor: self.bridge.resume_run(run_dir, owner=monitor))

    def _run(self, config: RunConfig, in_background, on_engine_thread) -> MonitorScreen | None:
        if config.train.processes > 1:
            try:
                monitor = MonitorScreen(in_background().run_dir)
            except (UserFacingError, ConfigError, OSError) as exc:
                self.notify(str(exc), severity="error")
                return None
            self.push_screen(monitor)
            return monitor
        monitor = MonitorScreen(bridge=self.bridge)
        self.push_screen(monitor)
        on_engine_thread(monitor)
        return monitor

    def action_help(self) -> None:
        from lightlm_tui.dialogs.help import HelpDialog, key_lines

        if isinstance(self.screen, HelpDialog):
            return
        self.push_screen(HelpDialog(self.screen.title or "LightLM", key_lines(self.screen, self.BINDINGS)))

    def action_runs(self, runs_dir: Path | None = None) -> RunsScreen:
        """The runs under `runs_dir` (default: the current config's, else ./runs)."""
        if runs_dir is None:
            config = next((s.config for s in reversed(self.screen_stack) if isinstance(s, ConfigScreen)), None)
            runs_dir = Path(config.train.runs_dir if config else "runs")
        screen = RunsScreen(runs_dir)
        self.push_screen(screen)
        return screen

    def show_playground(self, run_dir: Path) -> PlaygroundScreen:
        """Sample from `run_dir`'s latest checkpoint."""
        screen = PlaygroundScreen(run_dir, self.bridge)
        self.push_screen(screen)
        return screen

    def on_engine_event(self, message: EngineEvent) -> None:
        """An engine event reaches the screen whose request it answers; the rest are shown here."""
        event, owner = message.event, message.owner
        if owner is not None and owner in self.screen_stack:
            owner.engine_event(event)
        elif isinstance(event, ExportFinished):
            self.notify(f"exported {event.run_dir} to {event.path}")
        elif isinstance(event, EngineError) and event.recoverable:
            self.notify(event.message, severity="error")

    def on_unmount(self) -> None:
        if self._bridge is not None:
            self._bridge.close()  # a run in progress stops with a checkpoint


def make_app(monitor_dir: Path | None = None, compare_dirs: list[Path] | None = None) -> LightLMApp:
    """The app as the CLI and the tests build it."""
    return LightLMApp(monitor_dir, compare_dirs)


def run_app(monitor_dir: Path | None = None, compare_dirs: list[Path] | None = None) -> int:
    """Run the app in this terminal; returns the exit code.

    TEXTUAL_COLOR_SYSTEM (e.g. "standard" for a 16-colour SSH terminal) and TEXTUAL_FPS are
    read by Textual itself; nothing here overrides them."""
    # Stale COLUMNS/LINES (common after resizing an SSH session) would freeze the app's size.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    with stray_output_to(cache_dir() / APP_OUTPUT_LOG) as log_path:
        make_app(monitor_dir, compare_dirs).run()
    sys.stderr.write(caught_summary(log_path))
    return 0
