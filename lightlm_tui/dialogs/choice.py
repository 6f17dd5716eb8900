"""Pick one item from a list (a preset, an allowed value); dismisses with its id, or None on Esc."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option


class ChoiceDialog(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    DEFAULT_CSS = """
    ChoiceDialog { align: center middle; }
    ChoiceDialog > Vertical { width: 76; max-width: 100%; height: auto; max-height: 20; padding: 1 2;
        border: thick $primary; background: $surface; }
    ChoiceDialog Label { width: 1fr; }
    ChoiceDialog OptionList { height: auto; max-height: 10; }
    ChoiceDialog #details { height: auto; max-height: 8; margin-top: 1; color: $text-muted; }
    """

    def __init__(self, title: str, items: list[tuple[str, str]], current: str = "",
                 details: dict[str, str] | None = None) -> None:
        """`items` are (id, label) pairs; the one whose id is `current` starts highlighted.
        `details` (by id) is shown under the list for the highlighted item."""
        super().__init__()
        self.heading, self.items, self.current, self.details = title, items, current, details or {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.heading} (Enter picks, Esc cancels):")
            yield OptionList(*[Option(label, id=item_id) for item_id, label in self.items])
            yield Static("", id="details")

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#details", Static).update(self.details.get(event.option.id or "", ""))

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        ids = [item_id for item_id, _ in self.items]
        if self.current in ids:
            options.highlighted = ids.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
