"""`?`: the keys of the screen underneath and the global ones, in a modal."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static


def key_lines(screen: Screen, app_bindings) -> list[str]:
    """'key  description' for each shown binding of `screen`, then the app's."""
    lines = []
    for source in (screen.BINDINGS, app_bindings):
        for binding in source:
            if isinstance(binding, Binding) and binding.show and binding.description:
                lines.append(f"  {binding.key.replace(',', ' / '):<10} {binding.description}")
    return lines


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close")]
    DEFAULT_CSS = """
    HelpDialog { align: center middle; }
    HelpDialog > Vertical {
        width: 64; max-width: 100%; height: auto; max-height: 22; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    HelpDialog Label { width: 1fr; }
    """

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self.heading, self.lines = title, lines

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.heading}: keys", id="help-title")
            yield Static("\n".join(self.lines) or "  (no keys here)", id="help-keys", markup=False)
            yield Label("Ctrl+P opens the command palette with every action.  Esc closes.")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
