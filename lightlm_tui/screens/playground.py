"""The Playground: sample text from a run's latest checkpoint, streamed as it is generated.

Generation runs on the engine thread (torch lives there); partial text arrives as
GeneratedText events at most 20 times a second, the last one marked done.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static

from engine.runs.events import EngineError, GeneratedText

# (input id, label, default, parser) for the sampling settings.
SETTINGS = (
    ("max_new_tokens", "tokens", "200", int),
    ("temperature", "temp", "0.8", float),
    ("top_k", "top-k", "50", int),
    ("top_p", "top-p", "0.95", float),
    ("seed", "seed", "", int),
)


class PlaygroundScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]
    DEFAULT_CSS = """
    PlaygroundScreen #settings { height: 3; }
    PlaygroundScreen #settings Label { padding: 1 0 0 1; width: auto; }
    PlaygroundScreen #settings Input { width: 10; }
    PlaygroundScreen #output-box { height: 1fr; border: round $primary-darken-2; padding: 0 1; }
    PlaygroundScreen #state { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, run_dir: Path, bridge) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.bridge = bridge
        self.text = ""
        self.prompt = ""
        self.generating = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="prompt (Enter generates)", id="prompt")
        with Horizontal(id="settings"):
            for key, label, default, _ in SETTINGS:
                yield Label(label)
                yield Input(default, id=key, placeholder="none")
        yield Static("", id="state")
        with VerticalScroll(id="output-box"):
            yield Static("", id="output", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"LightLM - playground ({self.run_dir.name})"
        self.query_one("#state", Static).update(f"samples from the latest checkpoint of {self.run_dir}")
        self.query_one("#prompt", Input).focus()

    def settings(self) -> dict:
        """The sampling settings as typed; raises ValueError naming a bad one."""
        values = {}
        for key, label, _, parse in SETTINGS:
            text = self.query_one(f"#{key}", Input).value.strip()
            try:
                values[key] = parse(text) if text else None
            except ValueError:
                raise ValueError(f"{label} must be a number, not {text!r}") from None
        if values["max_new_tokens"] is None or values["max_new_tokens"] < 1:
            raise ValueError("tokens must be at least 1")
        if values["temperature"] is None:
            values["temperature"] = 0.8
        return values

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.generating:
            self.notify("still generating; wait for it to finish", severity="warning")
            return
        try:
            settings = self.settings()
        except ValueError as exc:
            self.query_one("#state", Static).update(f"not started: {exc}")
            return
        self.prompt = self.query_one("#prompt", Input).value
        self.text, self.generating = "", True
        self.query_one("#state", Static).update("generating...")
        self.show()
        self.bridge.generate(self.run_dir, self.prompt, owner=self, **settings)

    def engine_event(self, event) -> None:
        """Take a GeneratedText (partial or final) or the error that ended generation."""
        if isinstance(event, GeneratedText):
            self.text = event.text
            if event.done:
                self.generating = False
                self.query_one("#state", Static).update(f"done: {len(self.text)} characters")
            self.show()
        elif isinstance(event, EngineError) and self.generating:
            self.generating = False
            self.query_one("#state", Static).update(f"failed: {event.message}")

    def show(self) -> None:
        self.query_one("#output", Static).update(self.prompt + self.text)
