"""The Runs screen: every run under runs_dir with its status, progress and best val bits/byte.

Enter opens a run in the Monitor (following its events.jsonl), r resumes it from its latest
checkpoint, x exports it (a Hugging Face folder or a GGUF file, on the engine thread), g samples
from it.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from engine.config import ConfigError, load_config
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
            table.add_row(run.name, run.status, f"{run.step:,} / {run.total_steps:,}", parameters_cell(run), bpb,
                          key=str(run.path))
        count = f"{len(runs)} run(s)" if runs else "no runs yet"
        self.query_one("#where", Static).update(f"{count} in {self.runs_dir.resolve()}")

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
        self.app.start_run(config, run_dir=run_dir, resume=True)

    def action_export(self) -> None:
        """Ask which format (Hugging Face first, so x then Enter is the HF export), then export
        on the engine thread; ExportFinished (or an error sentence) comes back as an event."""
        from engine.gguf_export import GGUF_TYPES, default_gguf_path
        from lightlm_tui.dialogs.choice import ChoiceDialog

        run_dir = self.selected()
        if run_dir is None:
            return
        items = [("hf", "Hugging Face folder (transformers)")]
        items += [(f"gguf-{t}", f"GGUF file, {t} (llama.cpp, Ollama)") for t in GGUF_TYPES]
        targets = {"hf": run_dir / "export" / "hf"} | {f"gguf-{t}": default_gguf_path(run_dir, t) for t in GGUF_TYPES}
        details = {key: f"writes {path}" for key, path in targets.items()}

        def chosen(choice: str | None) -> None:
            from engine.runner import Export

            if choice is None:
                return
            fmt, _, gguf_type = choice.partition("-")
            self.app.bridge.runner.submit(Export(run_dir, format=fmt, gguf_type=gguf_type or "f32"))
            self.notify(f"exporting {run_dir.name} to {targets[choice]}...")

        self.app.push_screen(ChoiceDialog(f"Export {run_dir.name} as", items, "hf", details), chosen)

    def action_playground(self) -> None:
        run_dir = self.selected()
        if run_dir is not None:
            self.app.show_playground(run_dir)
