"""The Textual application: screens, global keys, and the way in (`run_app`)."""

from __future__ import annotations

import os

from textual.app import App
from textual.binding import Binding

from lightlm_tui.screens.hardware import HardwareScreen


class LightLMApp(App):
    """LightLM TUI. Starts on the hardware screen."""

    TITLE = "LightLM"
    BINDINGS = [Binding("q", "quit", "Quit"), Binding("ctrl+c", "quit", "Quit", show=False)]

    def on_mount(self) -> None:
        self.push_screen(HardwareScreen())


def make_app() -> LightLMApp:
    """The app as the CLI and the tests build it."""
    return LightLMApp()


def run_app() -> int:
    """Run the app in this terminal; returns the exit code."""
    # Stale COLUMNS/LINES (common after resizing an SSH session) would freeze the app's size.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    make_app().run()
    return 0
