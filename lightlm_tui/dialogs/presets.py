"""Pick a preset from a list; dismisses with its RunConfig (or None on Esc)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from engine.config import RunConfig, list_presets, load_preset


class PresetDialog(ModalScreen[RunConfig | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    DEFAULT_CSS = """
    PresetDialog { align: center middle; }
    PresetDialog > Vertical { width: 76; height: auto; max-height: 20; padding: 1 2; border: thick $primary; background: $surface; }
    PresetDialog OptionList { height: auto; max-height: 14; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Start from a preset (Enter picks, Esc cancels):")
            yield OptionList(*[Option(f"{p.name:<7} {p.description}", id=p.name) for p in list_presets()])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(load_preset(event.option.id))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
