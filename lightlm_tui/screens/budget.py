"""The Budget screen: "I have 20 minutes" becomes a model and data size measured on this machine.

Type a budget (45s, 5m, 1.5h, or hours as a bare number) and press Enter. The engine thread
plans it (engine/planner: the first plan on a machine measures it for a few seconds; later
ones reuse that) and the screen shows the planned settings beside the current ones, changed
values highlighted, with the predicted time, memory, parameters, tokens and epochs, and why
each choice was made. `a` applies the plan to the Config screen; `t` applies it and starts. The
screen answers whoever pushed it through `dismiss`: a BudgetChoice, or None for no plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine.config import ConfigError, RunConfig, config_from_dict, config_to_dict
from engine.config.durations import BudgetError, format_budget, parse_budget
from engine.runs.events import EngineError, PlanReady

# The settings a plan decides; the rest of the config is carried over unchanged.
COMPARED = [
    "model.num_dims", "model.num_layers", "model.num_heads", "model.num_kv_heads", "model.ffn_hidden_dims",
    "model.vocab_size", "model.context_len", "train.time_budget_s", "train.max_steps", "train.max_seq_len",
    "train.optimizer", "train.batch_size", "train.learning_rate", "train.warmup_ratio", "train.gradient_checkpointing",
    "train.use_compile", "train.eval_interval", "train.eval_batches", "data.tokenizer_vocab_size",
]


@dataclass(frozen=True)
class BudgetChoice:
    """What the Budget screen answers: the planned config, and whether to start it now."""

    config: RunConfig
    start: bool = False


def _value(config: dict, key: str) -> object:
    section, name = key.split(".")
    return config[section][name]


class BudgetScreen(Screen[BudgetChoice | None]):
    BINDINGS = [
        Binding("a", "apply", "Apply"),
        Binding("t", "start", "Apply + start"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    BudgetScreen #ask { height: 3; }
    BudgetScreen #ask Static { width: auto; padding: 1 1 0 1; }
    BudgetScreen #budget { width: 24; }
    BudgetScreen #state { height: auto; padding: 0 1; }
    BudgetScreen #state.problem { color: $error; }
    BudgetScreen #body { height: 1fr; }
    BudgetScreen #compare { width: 58; height: 1fr; }
    BudgetScreen #why { width: 1fr; padding: 0 1; border-left: solid $primary-darken-2; }
    """

    def __init__(self, current: RunConfig) -> None:
        super().__init__()
        self.current = current
        self.planned: RunConfig | None = None
        self.waiting_for: float | None = None  # the budget being planned

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="ask"):
            yield Static("I have")
            yield Input(placeholder="5m", id="budget")
            yield Static("to train (45s, 5m, 1.5h; a bare number is hours). Enter plans.")
        yield Static("", id="state")
        with Horizontal(id="body"):
            yield DataTable(id="compare", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="why"):
                yield Static("", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "LightLM - budget"
        table = self.query_one(DataTable)
        for label, width in (("setting", 30), ("current", 12), ("planned", 12)):
            table.add_column(label, key=label, width=width)
        self.show_comparison()
        self.query_one("#budget", Input).focus()

    # ----- planning -------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            budget_s = parse_budget(event.value)
        except BudgetError as exc:
            self.show_state(str(exc), problem=True)
            return
        self.waiting_for = budget_s
        busy = " (after the run in progress: the engine does one thing at a time)" if self.app.bridge.busy else ""
        self.show_state(f"planning {format_budget(budget_s)}: timing a few training steps on this machine "
                        f"(a few seconds the first time){busy}...")
        self.app.bridge.plan(budget_s, self.current, owner=self)

    def engine_event(self, event) -> None:
        """The engine's answer to this screen's plan."""
        if isinstance(event, PlanReady):
            self.plan_ready(event)
        elif isinstance(event, EngineError):
            self.plan_failed(event.message)

    def plan_ready(self, event) -> None:
        """A PlanReady from the engine thread."""
        if self.waiting_for is None or event.budget_s != self.waiting_for:
            return  # an answer to an older question
        self.waiting_for = None
        try:
            self.planned = config_from_dict(event.config, "the plan")
        except ConfigError as exc:
            self.show_state(f"the plan could not be read: {exc}", problem=True)
            return
        self.show_state(f"plan for {format_budget(event.budget_s)}: a applies it to the config, t applies and starts")
        lines = list(event.summary) + [""] + [f"- {reason}" for reason in event.reasons]
        lines += [f"warning: {warning}" for warning in event.warnings]
        self.query_one("#summary", Static).update("\n".join(lines))
        self.show_comparison()
        self.query_one(DataTable).focus()  # so a / t act (in the input they would be typed)

    def plan_failed(self, message: str) -> None:
        if self.waiting_for is not None:
            self.waiting_for = None
            self.show_state(message, problem=True)

    # ----- showing --------------------------------------------------------------------------
    def show_state(self, text: str, problem: bool = False) -> None:
        state = self.query_one("#state", Static)
        state.set_class(problem, "problem")
        state.update(text)

    def show_comparison(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        current = config_to_dict(self.current)
        planned = config_to_dict(self.planned) if self.planned else None
        for key in COMPARED:
            before = _value(current, key)
            after = _value(planned, key) if planned else ""
            changed = planned is not None and after != before
            table.add_row(key, _text(before), Text(_text(after), style="bold yellow" if changed else ""), key=key)

    # ----- acting ---------------------------------------------------------------------------
    def action_apply(self) -> None:
        self._answer(start=False)

    def action_start(self) -> None:
        self._answer(start=True)

    def _answer(self, start: bool) -> None:
        if self.planned is None:
            self.notify("type a budget and press Enter first", severity="warning")
            return
        self.dismiss(BudgetChoice(self.planned, start))

    def action_back(self) -> None:
        self.dismiss(None)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
