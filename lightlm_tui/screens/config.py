"""The Config screen: every model / train / data setting in one table, edited in place.

Enter on a row edits it: booleans toggle, everything else opens the edit bar under the table
(prefilled; Enter applies, Esc cancels). A value of the wrong type or out of bounds is refused
with its message and not applied. Rules that tie fields together are applied but listed under
the table until fixed, and they block Start. The side panel recomputes size, FLOPs and memory
on every change. Keys: p presets, d data source, b budget, l load TOML, w write TOML, t start training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine.config.durations import format_budget
from engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_to_dict,
    field_problems,
    list_presets,
    load_config,
    load_preset,
    save_config,
    validate,
)
from engine.config.finetune import lora_parameter_count
from engine.config.schema import SECTIONS, describe_setting, section_fields
from engine.runs.events import EngineError, PlanReady
from engine.model.estimates import (
    active_parameter_count,
    flops_per_token,
    memory_shortfall,
    parameter_count,
    training_memory,
)


def _display(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# The first run (Hardware, Enter, t) trains for this long on any machine: the planner sizes the
# model from a measurement of this machine, and the run's clock ends it on time. A fixed step
# count would take 5 minutes on a CPU with bf16 and 19-23 on one without.
FIRST_RUN_BUDGET_S = 300.0


def run_length(config: RunConfig) -> str:
    """How long a run of `config` takes, as far as it can be said before it starts."""
    t = config.train
    if t.time_budget_s > 0:
        return f"{format_budget(t.time_budget_s)} (time budget: the clock ends it)"
    steps = f"{t.max_steps:,} steps" if t.max_steps else f"{t.num_epochs} epoch(s)"
    return f"{steps}; time unknown until it runs (b plans a time budget)"


def setting_help(key: str) -> str:
    """One line about setting `section.key`: what it does, its bounds or choices, what 0 means."""
    if "." not in key:
        return ""
    section, name = key.split(".", 1)
    return f"{key}: {describe_setting(section_fields(section)[name].metadata)}"


class ConfigScreen(Screen):
    """Edits one RunConfig; `self.config` is always the applied state."""

    BINDINGS = [
        Binding("p", "presets", "Presets"),
        Binding("d", "data_source", "Data"),
        Binding("b", "budget", "Budget"),
        Binding("l", "load", "Load"),
        Binding("w", "save", "Save"),
        Binding("t", "start", "Start"),
        Binding("escape", "cancel_edit", "Cancel", show=False),
    ]
    DEFAULT_CSS = """
    ConfigScreen #main { height: 1fr; }
    ConfigScreen #settings { width: 1fr; }
    ConfigScreen #table { height: 1fr; }
    ConfigScreen #side { width: 30; padding: 0 1; border-left: solid $primary-darken-2; }
    ConfigScreen #help { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    ConfigScreen #editor { display: none; }
    ConfigScreen #editor.editing { display: block; }
    ConfigScreen #message { height: auto; max-height: 6; padding: 0 1; color: $error; }
    ConfigScreen #message.ok { color: $success; }
    """

    def __init__(self, config: RunConfig, ram_bytes: int | None = None, plan_budget_s: float = 0.0) -> None:
        """`plan_budget_s` > 0: ask the engine thread to size `config` for that many seconds on
        this machine, and show the plan when it comes (unless the user changed the config first)."""
        super().__init__()
        self.config = config
        self.ram_bytes = ram_bytes
        self.editing: str | None = None  # "section.key", "load" or "save" while the edit bar is open
        self.planning_for: float | None = plan_budget_s or None  # the budget being planned
        self.start_when_planned = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="settings"):
                yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="help")
                yield Input(id="editor")
                yield Static("", id="message")
            yield Static("", id="side")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"LightLM - config ({self.config.name or 'unnamed'})"
        table = self.query_one(DataTable)
        table.add_column("setting", key="setting", width=28)
        table.add_column("value", key="value")
        self.refresh_all()
        table.focus()
        if self.planning_for:
            self.app.bridge.plan(self.planning_for, self.config, owner=self)
            self.show_problems()

    # ----- the first run's plan -----------------------------------------------------------------
    def engine_event(self, event) -> None:
        """The engine's answer to this screen's plan: a PlanReady, or the error that ended it."""
        if isinstance(event, PlanReady):
            self.plan_ready(event)
        elif isinstance(event, EngineError):
            self.plan_failed(event.message)

    def plan_ready(self, event) -> None:
        """A PlanReady from the engine thread: the planned config replaces the shown one."""
        from engine.config import config_from_dict

        if self.planning_for is None or event.budget_s != self.planning_for:
            return
        self.planning_for = None
        try:
            planned = config_from_dict(event.config, "the plan")
        except ConfigError as exc:
            self.plan_failed(f"the plan could not be read: {exc}")
            return
        self.set_config(planned, by_user=False)
        shape = event.summary[1].split(None, 1)[-1] if len(event.summary) > 1 else ""
        self.notify(f"planned for this machine: {shape}")
        if self.start_when_planned:
            self.action_start()

    def plan_failed(self, message: str) -> None:
        """Planning failed: keep the shown shape, but still end on time (the clock decides)."""
        if self.planning_for is None:
            return
        budget, self.planning_for = self.planning_for, None
        self.set_config(dataclasses.replace(self.config, train=dataclasses.replace(
            self.config.train, time_budget_s=budget)), by_user=False)
        self.notify(f"could not plan for this machine ({message}); the preset's shape trains for "
                    f"{format_budget(budget)}", severity="warning")
        if self.start_when_planned:
            self.action_start()

    # ----- showing ------------------------------------------------------------------------
    def refresh_all(self) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        data = config_to_dict(self.config)
        for section in SECTIONS:
            table.add_row(Text(f"[{section}]", style="bold"), "", key=f"section:{section}")
            for key, value in data[section].items():
                table.add_row(f"  {key}", _display(value), key=f"{section}.{key}")
        table.move_cursor(row=min(cursor, table.row_count - 1))
        self.show_problems()
        self.query_one("#side", Static).update(self.side_text())

    def show_problems(self, refused: str = "") -> None:
        problems = validate(self.config)
        message = self.query_one("#message", Static)
        lines = [f"not applied: {refused}"] if refused else []
        lines += [str(p) for p in problems]
        shortfall = self.memory_shortfall()
        message.set_class(not lines and not shortfall, "ok")
        if not lines and shortfall:
            lines.append(f"warning: {shortfall}")
        if self.planning_for:
            message.set_class(True, "ok")
            message.update(f"sizing a {format_budget(self.planning_for)} run for this machine: timing a few "
                           "training steps (seconds; longer the first time)..."
                           + (" t pressed: it starts when planned" if self.start_when_planned else ""))
            return
        message.update("\n".join(lines) if lines else f"config ok: t trains for {run_length(self.config)}")

    def memory_shortfall(self) -> str | None:
        """The estimate against the RAM free now (a GPU's memory is checked by the engine)."""
        import psutil

        return memory_shortfall(self.config.model, self.config.train, psutil.virtual_memory().available,
                                lora=self.config.lora)

    def side_text(self) -> str:
        m, t = self.config.model, self.config.train
        memory = training_memory(m, t, lora=self.config.lora)
        ram = f" of {self.ram_bytes / 2**30:.0f} GiB" if self.ram_bytes else ""
        return "\n".join([
            "run length",
            f"  {format_budget(t.time_budget_s)}, time budget" if t.time_budget_s > 0 else
            f"  {t.max_steps:,} steps" if t.max_steps else f"  {t.num_epochs} epoch(s)",
            "parameters",
            f"  {parameter_count(m):,}",
            *([f"  {active_parameter_count(m):,} active"] if m.use_moe else []),
            "FLOPs per token",
            f"  {flops_per_token(m, t.max_seq_len):,}",
            "tokens per step",
            f"  {t.tokens_per_step:,}",
            "training memory",
            f"  {memory.total / 2**20:,.0f} MiB{ram}",
            f"  weights {memory.weights / 2**20:,.1f}",
            f"  optim.  {memory.optimizer / 2**20:,.1f}",
            f"  activ.  {memory.activations / 2**20:,.1f}",
            *self.lora_lines(memory.total),
        ])

    def lora_lines(self, lora_total_bytes: int) -> list[str]:
        """With LoRA on: trainable vs total parameters, and the memory saved against training
        every weight (the gradients and optimizer state the frozen base no longer needs)."""
        lora, m, t = self.config.lora, self.config.model, self.config.train
        if not lora.enabled:
            return []
        total = parameter_count(m)
        trainable = lora_parameter_count(m, lora.target_modules, lora.rank)
        saved = training_memory(m, t).total - lora_total_bytes
        return [
            "LoRA trainable",
            f"  {trainable:,} of {total + trainable:,}",
            f"  ({100 * trainable / max(total + trainable, 1):.2f} %)",
            f"  saves ~{saved / 2**20:,.1f} MiB",
        ]

    # ----- editing ------------------------------------------------------------------------
    def selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None or key.startswith("section:") else key

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.query_one("#help", Static).update(setting_help(event.row_key.value or ""))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_edit()  # Enter on a row

    def action_edit(self) -> None:
        key = self.selected_key()
        if key is None:
            return
        section, name = key.split(".", 1)
        value = getattr(getattr(self.config, section), name)
        if isinstance(value, bool):
            self.apply_text(key, "false" if value else "true")
            return
        choices = section_fields(section)[name].metadata.get("choices")
        if choices:
            from lightlm_tui.dialogs.choice import ChoiceDialog

            def chosen(choice: str | None) -> None:
                if choice is not None:
                    self.apply_text(key, choice)

            self.app.push_screen(ChoiceDialog(key, [(c, c) for c in choices], str(value)), chosen)
            return
        self.open_editor(key, _display(value), f"{key} = ")

    def open_editor(self, mode: str, text: str, placeholder: str) -> None:
        self.editing = mode
        editor = self.query_one("#editor", Input)
        editor.placeholder = placeholder
        editor.value = text
        editor.add_class("editing")
        editor.focus()

    def action_cancel_edit(self) -> None:
        self.close_editor()

    def close_editor(self) -> None:
        self.editing = None
        editor = self.query_one("#editor", Input)
        editor.remove_class("editing")
        self.query_one(DataTable).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        mode, text = self.editing, event.value
        self.close_editor()
        if mode == "load":
            self.load(Path(text).expanduser())
        elif mode == "save":
            self.save(Path(text).expanduser())
        elif mode:
            self.apply_text(mode, text)

    def apply_text(self, key: str, text: str) -> bool:
        """Apply `key = text` if the value itself is valid; returns whether it was applied."""
        return self.apply_settings({key: text})

    # ----- files and presets ----------------------------------------------------------------
    def action_load(self) -> None:
        self.open_editor("load", "", "path of a TOML run config to load")

    def action_save(self) -> None:
        self.open_editor("save", f"{self.config.name or 'run'}.toml", "path to write the TOML run config to")

    def load(self, path: Path) -> None:
        try:
            self.set_config(load_config(path))
        except ConfigError as exc:
            self.show_problems(refused=str(exc).replace("\n", " "))
            return
        self.notify(f"loaded {path}")

    def save(self, path: Path) -> None:
        try:
            save_config(self.config, path)
        except OSError as exc:
            self.show_problems(refused=f"cannot write {path}: {exc.strerror or exc}")
            return
        self.notify(f"saved {path}")

    def set_config(self, config: RunConfig, by_user: bool = True) -> None:
        if by_user and self.planning_for:  # the user chose: a plan arriving later must not undo it
            self.planning_for, self.start_when_planned = None, False
        self.config = config
        self.title = f"LightLM - config ({config.name or 'unnamed'})"
        self.refresh_all()

    def action_presets(self) -> None:
        from lightlm_tui.dialogs.choice import ChoiceDialog

        def chosen(name: str | None) -> None:
            if name is not None:
                self.set_config(load_preset(name))
                self.notify(f"preset {name} loaded")

        presets = list_presets()
        sizes = {p.name: parameter_count(load_preset(p.name).model) for p in presets}
        items = [(p.name, f"{p.name:<7} {sizes[p.name] / 1e6:>7.1f}M parameters") for p in presets]
        details = {p.name: p.description.removeprefix(f"{p.name}: ") for p in presets}
        self.app.push_screen(ChoiceDialog("Start from a preset", items, self.config.name, details), chosen)

    def action_budget(self) -> None:
        """The Budget screen answers with a planned config (applied here) and whether to start it."""
        from lightlm_tui.screens.budget import BudgetChoice, BudgetScreen

        def chosen(choice: BudgetChoice | None) -> None:
            if choice is None:
                return
            self.set_config(choice.config)
            self.notify(f"planned config applied ({choice.config.name})")
            if choice.start:
                self.app.start_run(choice.config)

        self.app.push_screen(BudgetScreen(self.config), chosen)

    def action_data_source(self) -> None:
        from lightlm_tui.dialogs.data_source import DataSourceDialog

        def chosen(settings: dict | None) -> None:
            if settings:
                self.apply_settings(settings)

        self.app.push_screen(DataSourceDialog(self.config.data), chosen)

    def apply_settings(self, settings: dict[str, str]) -> bool:
        """Apply several `key: text` settings together, or none of them."""
        try:
            candidate = apply_overrides(self.config, [f"{key}={text}" for key, text in settings.items()])
        except ConfigError as exc:
            self.show_problems(refused="; ".join(str(p) for p in exc.problems))
            return False
        own = [p for p in field_problems(candidate) if p.field in settings]
        if own:
            self.show_problems(refused=str(own[0]))
            return False
        self.config = candidate
        self.planning_for, self.start_when_planned = None, False  # the user's edit wins over a pending plan
        self.refresh_all()
        return True

    def action_start(self) -> None:
        if self.planning_for:
            self.start_when_planned = True
            self.show_problems()
            return
        problems = validate(self.config)
        if problems:
            self.show_problems()
            self.notify(f"{len(problems)} problem(s) to fix before training", severity="error")
            return
        self.app.start_run(dataclasses.replace(self.config))
