"""The Runs screen: every run under runs_dir with its status, progress and best val bits/byte.

Enter opens a run in the Monitor (following its events.jsonl), r resumes it from its latest
checkpoint, x exports it (a Hugging Face folder or a GGUF file, on the engine thread), g samples
from it, f fine-tunes it (the Config screen set up to start from it with LoRA on, and the data
source picker open for the new text). Space marks runs and c compares the marked ones
(screens/compare.py).
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from engine.config import ConfigError, RunConfig, load_config
from engine.config.finetune import fine_tune_settings
from engine.runs.run_dir import RunSummary, list_runs, summarize_run


def _short(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count / 1e3:.0f}k"


def parameters_cell(run: RunSummary) -> str:
    """Total parameters, and for a mixture of experts the active ones per token: "8.4M (2.1M active)"."""
    if not run.params:
        return "-"
    if run.active_params and run.active_params < run.params:
        return f"{_short(run.params)} ({_short(run.active_params)} active)"
    return _short(run.params)


class RunsScreen(Screen):
    BINDINGS = [
        Binding("r", "resume", "Resume"),
        Binding("x", "export", "Export"),
        Binding("g", "playground", "Generate"),
        Binding("f", "fine_tune", "Fine-tune"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("f5", "reload", "Reload"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    DEFAULT_CSS = """
    RunsScreen #where { height: 1; padding: 0 1; }
    RunsScreen DataTable { height: 1fr; }
    """

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.paths: dict[str, Path] = {}
        self.marked: list[str] = []  # run paths marked for a comparison, in the order marked

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="where")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "LightLM - runs"
        table = self.query_one(DataTable)
        for label in ("run", "status", "steps", "parameters", "best val bpb"):
            table.add_column(label, key=label)
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        runs = list_runs(self.runs_dir)
        self.paths = {str(r.path): r.path for r in runs}
        for run in runs:
            bpb = f"{run.best_val_bpb:.4f}" if run.best_val_bpb is not None else "-"
            table.add_row(self._name_cell(str(run.path)), run.status, f"{run.step:,} / {run.total_steps:,}",
                          parameters_cell(run), bpb, key=str(run.path))
        self.marked = [key for key in self.marked if key in self.paths]
        count = f"{len(runs)} run(s)" if runs else "no runs yet"
        self.query_one("#where", Static).update(f"{count} in {self.runs_dir.resolve()}")

    def _name_cell(self, key: str) -> str:
        return f"* {self.paths[key].name}" if key in self.marked else self.paths[key].name

    def action_mark(self) -> None:
        """Mark (or unmark) the highlighted run for a comparison (c)."""
        run_dir = self.selected()
        if run_dir is None:
            return
        key = str(run_dir)
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked.append(key)
        self.query_one(DataTable).update_cell(key, "run", self._name_cell(key))

    def action_compare(self) -> None:
        """The marked runs overlaid on one plot, with the settings that differ."""
        if len(self.marked) < 2:
            self.notify("mark two or more runs with space first, then c compares them", severity="warning")
            return
        self.app.show_compare([self.paths[key] for key in self.marked])

    def selected(self) -> Path | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return self.paths[table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from lightlm_tui.screens.monitor import MonitorScreen

        self.app.push_screen(MonitorScreen(self.paths[event.row_key.value]))

    def action_resume(self) -> None:
        run_dir = self.selected()
        if run_dir is None:
            return
        if self.app.bridge.busy:
            self.notify("a run is already training; stop it first", severity="warning")
            return
        if summarize_run(run_dir).status == "running":
            self.notify(f"{run_dir.name} is training in another process; Enter watches it", severity="warning")
            return
        try:
            config = load_config(run_dir / "config.toml")
        except ConfigError as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.resume_run(run_dir, config)

    def action_export(self) -> None:
        """Ask which format (Hugging Face first, so x then Enter is the HF export), then export
        on the engine thread; ExportFinished (or an error sentence) comes back as an event."""
        from engine.use.gguf_export import GGUF_TYPES, default_gguf_path
        from lightlm_tui.dialogs.choice import ChoiceDialog

        run_dir = self.selected()
        if run_dir is None:
            return
        items = [("hf", "Hugging Face folder (transformers)")]
        items += [(f"gguf-{t}", f"GGUF file, {t} (llama.cpp, Ollama)") for t in GGUF_TYPES]
        targets = {"hf": run_dir / "export" / "hf"} | {f"gguf-{t}": default_gguf_path(run_dir, t) for t in GGUF_TYPES}
        details = {key: f"writes {path}" for key, path in targets.items()}

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            fmt, _, gguf_type = choice.partition("-")
            self.app.bridge.export(run_dir, fmt, gguf_type or "f32")
            self.notify(f"exporting {run_dir.name} to {targets[choice]}...")

        self.app.push_screen(ChoiceDialog(f"Export {run_dir.name} as", items, "hf", details), chosen)

    def action_fine_tune(self) -> None:
        """The Config screen on a LoRA fine-tune of the selected run, then the data source picker:
        the new text is the one thing left to choose. Refusals the engine would make later
        (no checkpoint yet, a LoRA run as base) are said here, before any set-up."""
        run_dir = self.selected()
        if run_dir is None:
            return
        try:
            config = fine_tune_config_for(run_dir)
        except (ConfigError, ValueError) as exc:
            self.notify(str(exc), severity="error")
            return
        screen = self.app.show_config(config)
        screen.call_after_refresh(screen.action_data_source)

    def action_playground(self) -> None:
        run_dir = self.selected()
        if run_dir is not None:
            self.app.show_playground(run_dir)


def fine_tune_config_for(run_dir: Path) -> RunConfig:
    """A LoRA fine-tune of `run_dir`: its own settings as the start, its shape and tokenizer, LoRA
    on, named after it. Raises ValueError with a sentence for a run that cannot be a base."""
    import dataclasses

    base = load_config(run_dir / "config.toml")
    if base.lora.enabled:
        raise ValueError(f"{run_dir.name} is a LoRA run (its checkpoints hold adapters only); "
                         "fine-tune its base instead")
    if not (run_dir / "checkpoints" / "latest").is_file():
        raise ValueError(f"{run_dir.name} has no checkpoint yet; train (or resume) it until it saves one")
    config = fine_tune_settings(base, base, run_dir.resolve())
    return dataclasses.replace(config, name=f"{base.name or run_dir.name}-lora",
                               lora=dataclasses.replace(base.lora, enabled=True))
