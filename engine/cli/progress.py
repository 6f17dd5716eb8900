"""How the headless CLI shows a run: a one-line progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

from typing import TextIO

from engine.config.durations import format_duration
from engine.runs.events import (
    CheckpointSaved,
    DataProgress,
    EngineError,
    EvalResult,
    Event,
    LogLine,
    RunFinished,
    RunStarted,
    StepMetrics,
)


class ProgressPrinter:
    """Turns events into terminal output. On a TTY the step line redraws in place (a bar with
    ETA); otherwise (nohup, CI, a pipe) each step is its own line, upstream LightLM's format."""

    def __init__(self, out: TextIO, is_tty: bool | None = None, width: int = 24) -> None:
        self.out = out
        self.tty = out.isatty() if is_tty is None else is_tty
        self.width, self.total, self.open_line = width, 0, False
        self.data_shown: tuple[str, int] = ("", -1)  # the data phase and tenth last printed (no TTY)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            self._step(event)
            return
        if isinstance(event, DataProgress):
            self._data(event)
            return
        self._end_line()
        if isinstance(event, RunStarted):
            self.total = event.total_steps
            start = f", resuming at step {event.start_step}" if event.start_step else ""
            trainable = event.trainable_params
            params = (f"{trainable:,} trainable of {event.params:,} parameters ({100 * trainable / event.params:.2f} %)"
                      if 0 < trainable < event.params else f"{event.params:,} parameters")
            if event.init_from:
                self.out.write(f"Starting from {event.init_from} (weights sha256 {event.init_from_sha256[:12]})\n")
            self.out.write(
                f"Run {event.run_dir}: {params}, {event.total_steps} steps of "
                f"{event.tokens_per_step:,} tokens on {event.device} ({event.dtype}){start}\n"
            )
        elif isinstance(event, EvalResult):
            self.out.write(f"Eval step {event.step} | val loss {event.val_loss:.4f} | val bpb {event.val_bpb:.4f}"
                           f" | ppl {event.perplexity:.1f}\n")
        elif isinstance(event, CheckpointSaved):
            self.out.write(f"Checkpoint step {event.step} ({event.reason}) -> {event.path}\n")
        elif isinstance(event, LogLine):
            self.out.write(f"{'Warning: ' if event.level == 'warning' else ''}{event.text}\n")
        elif isinstance(event, EngineError):
            self.out.write(f"Error: {event.message}\n")
        elif isinstance(event, RunFinished):
            figures = (f" | val loss {event.val_loss:.4f} | val bpb {event.val_bpb:.4f}"
                       if event.val_loss is not None else "")
            self.out.write(f"Finished ({event.status}) at step {event.step} in {format_duration(event.wall_s)}"
                           f"{figures}\n")
        self.out.flush()

    def _step(self, event: StepMetrics) -> None:
        memory = f"{event.ram_mb:,.0f} MB RAM" + (f", {event.vram_mb:,.0f} MB VRAM" if event.vram_mb else "")
        figures = (f"Loss {event.loss:.4f} | LR {event.lr:.2e} | Tokens/sec {event.tokens_per_s:,.0f} | "
                   f"Memory {memory} | ETA {format_duration(event.eta_s)}")
        if self.tty:
            done = event.step / max(1, self.total)
            bar = "#" * int(done * self.width)
            self.out.write(f"\r[{bar:<{self.width}}] {event.step}/{self.total} | {figures}\x1b[K")
            self.open_line = True
        else:
            self.out.write(f"Step {event.step}/{self.total} | {figures}\n")
        self.out.flush()

    def _data(self, event: DataProgress) -> None:
        """A bar redrawn in place on a TTY; elsewhere a line when a phase starts and at each
        further tenth of it, so a log stays short."""
        fraction = event.fraction
        if fraction is None:
            text = f"Preparing data: {event.phase}..."
        else:
            eta = f", ETA {format_duration(event.eta_s)}" if event.eta_s is not None else ""
            text = (f"Preparing data: {event.phase} {event.documents_done:,}/{event.documents_total:,} documents "
                    f"({100 * fraction:.0f} %, {event.bytes_done / 1e6:,.1f} MB, {event.mb_per_s:.1f} MB/s{eta})")
        if self.tty:
            self.out.write(f"\r{text}\x1b[K")
            self.open_line = True
        else:
            tenth = -1 if fraction is None else int(10 * fraction)
            if (event.phase, tenth) == self.data_shown:
                return
            self.data_shown = (event.phase, tenth)
            self.out.write(text + "\n")
        self.out.flush()

    def _end_line(self) -> None:
        if self.open_line:
            self.out.write("\n")
            self.open_line = False
