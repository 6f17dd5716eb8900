"""Pick the data source: an embedded corpus, a local file or folder, or a hub dataset id.

Picking an embedded corpus from the list fills the source; typing a path or an id works too.
As the source changes, a worker thread peeks at it (engine/data/peek.py: file count and size,
the columns of the first record) and the dialog shows what it found or what is wrong, so a
missing file or a wrong text field is caught here instead of after Start. Dismisses with the
data settings to apply ({"data.source": ..., ...}) or None on Esc.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.config import DataConfig
from engine.data.peek import EMBEDDED_DESCRIPTIONS, SourcePeek, peek_source

FIELDS = ("source", "hub_config", "split", "text_field")
LABELS = {"source": "source", "hub_config": "hub config", "split": "split", "text_field": "text field"}


class DataSourceDialog(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    DEFAULT_CSS = """
    DataSourceDialog { align: center middle; }
    DataSourceDialog > Vertical { width: 90%; max-width: 100; height: auto; max-height: 100%;
        padding: 0 1; border: thick $primary; background: $surface; }
    DataSourceDialog OptionList { height: auto; max-height: 4; border: none; padding: 0; margin-bottom: 1; }
    DataSourceDialog > Vertical > Label { width: 1fr; }
    DataSourceDialog .row { height: 1; margin-bottom: 0; }
    DataSourceDialog .row Label { width: 12; }
    DataSourceDialog .row Input { width: 1fr; height: 1; border: none; padding: 0 1; }
    DataSourceDialog #peek { height: auto; max-height: 5; margin-top: 1; }
    DataSourceDialog #peek.problem { color: $error; }
    DataSourceDialog #hint { color: $text-muted; }
    """

    def __init__(self, data: DataConfig) -> None:
        super().__init__()
        self.data = data
        self.peek: SourcePeek | None = None
        self.peeked = ""  # the source text `peek` describes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Data source: an embedded corpus, a file or folder, or a hub dataset id")
            yield OptionList(*[Option(Text(f"{name:<14} {text}", no_wrap=True, overflow="ellipsis"), id=name)
                               for name, text in EMBEDDED_DESCRIPTIONS.items()])
            for name in FIELDS:
                with Horizontal(classes="row"):
                    yield Label(LABELS[name])
                    yield Input(str(getattr(self.data, name)), id=name)
            yield Static("", id="peek")
            yield Label("Enter applies · Tab moves · Esc cancels", id="hint")

    def on_mount(self) -> None:
        self.query_one("#source", Input).focus()
        self.look(self.data.source)

    # ----- what the source holds ------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "source":
            self.look(event.value)
        elif event.input.id == "text_field" and self.peek is not None:
            self.show_peek(self.peek, self.peeked)

    @work(thread=True, exclusive=True, group="peek")
    def look(self, source: str) -> None:
        found = peek_source(source)  # reads the disk: off the UI thread
        if not get_current_worker().is_cancelled:  # the user typed on: a newer look is coming
            self.app.call_from_thread(self.show_peek, found, source)

    def show_peek(self, found: SourcePeek, source: str) -> None:
        self.peek, self.peeked = found, source
        problem = found.problem or found.text_field_problem(self.query_one("#text_field", Input).value.strip())
        lines = [found.summary] if found.summary else []
        if found.columns:
            lines.append(f"columns: {', '.join(found.columns)}")
        if problem:
            lines.append(problem)
        peek = self.query_one("#peek", Static)
        peek.set_class(bool(problem), "problem")
        peek.update("\n".join(lines))

    # ----- choosing -------------------------------------------------------------------------
    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#source", Input).value = event.option.id
        self.query_one("#text_field", Input).value = "text"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.apply()

    def apply(self) -> None:
        values = {name: self.query_one(f"#{name}", Input).value.strip() for name in FIELDS}
        source = self.query_one("#source", Input).value
        # The worker's answer may be for older text (Enter right after typing): then look now.
        found = self.peek if self.peek is not None and self.peeked == source else peek_source(source)
        problem = found.problem or found.text_field_problem(values["text_field"])
        if problem:
            self.show_peek(found, source)
            self.notify(problem, severity="error")
            return
        self.dismiss({f"data.{name}": value for name, value in values.items()})

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
