"""The message protocol from the engine to whoever watches it (the TUI, the CLI, a log file).

Every event is a small frozen dataclass that is also a JSON object with a "type" field; the
runner appends each one as a line to RUN_DIR/events.jsonl, so a run can be watched or replayed
later by a process that never shared memory with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_dir: str
    params: int
    total_steps: int
    tokens_per_step: int
    start_step: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    # The training process, so a Monitor can tell a live run from one whose process died
    # (its start time tells it apart from a later process that got the same pid).
    pid: int = 0
    pid_started: float = 0.0
    host: str = ""
    time_budget_s: float = 0.0  # a budgeted run: total_steps is a prediction, the clock decides
    active_params: int = 0  # parameters one token uses (less than params for a mixture of experts; 0: unknown)
    trainable_params: int = 0  # parameters the optimizer updates (the adapters of a LoRA run; 0: unknown)
    init_from: str = ""  # a fine-tune: the checkpoint folder it started from
    init_from_sha256: str = ""  # ... and the SHA-256 of that checkpoint's weights


@dataclass(frozen=True)
class DataProgress(Event):
    """How far a long data phase is, before the first step: `phase` is "training the tokenizer"
    (no counts: the tokenizers library says nothing until it ends) or "tokenising" (the
    documents, bytes and tokens done of `documents_total`)."""

    type: ClassVar[str] = "data_progress"
    phase: str
    documents_done: int = 0
    documents_total: int = 0
    bytes_done: int = 0
    tokens_done: int = 0
    elapsed_s: float = 0.0
    run_dir: str = ""

    @property
    def fraction(self) -> float | None:
        return self.documents_done / self.documents_total if self.documents_total else None

    @property
    def mb_per_s(self) -> float:
        return self.bytes_done / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        fraction = self.fraction
        if not fraction or self.elapsed_s <= 0:
            return None
        return self.elapsed_s * (1 - fraction) / fraction


@dataclass(frozen=True)
class StepMetrics(Event):
    type: ClassVar[str] = "step"
    step: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    mfu: float
    ram_mb: float
    vram_mb: float = 0.0
    vram_reserved_mb: float = 0.0
    vram_peak_mb: float = 0.0
    gpu_util: float | None = None
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    progress: float = 0.0  # 0..1 of the run: steps done, or for a time budget the time used
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)
    # `loss` is the cross-entropy alone (comparable with val_loss); a mixture-of-experts model
    # trained with the auxiliary balancing loss reports that loss (already scaled by its
    # coefficient) here. None when the model has none.
    aux_loss: float | None = None
    # Mixture-of-experts loads over the reporting window, per layer: each expert's fraction of
    # the token-expert assignments, max-violation (max - mean) / mean, experts that got no token.
    expert_load: list[list[float]] | None = None
    expert_max_violation: list[float] | None = None
    expert_dead: list[int] | None = None


@dataclass(frozen=True)
class EvalResult(Event):
    type: ClassVar[str] = "eval"
    step: int
    val_loss: float
    val_bpb: float
    perplexity: float
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)


@dataclass(frozen=True)
class CheckpointSaved(Event):
    type: ClassVar[str] = "checkpoint"
    step: int
    path: str
    reason: str = "interval"
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)


@dataclass(frozen=True)
class LogLine(Event):
    type: ClassVar[str] = "log"
    level: str
    text: str
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)


@dataclass(frozen=True)
class PauseChanged(Event):
    """The run paused (or went on) at a step boundary."""

    type: ClassVar[str] = "pause"
    paused: bool
    step: int
    run_dir: str = ""


@dataclass(frozen=True)
class MicroBatchReduced(Event):
    """Out of memory: the step was run again with a smaller micro-batch (the same windows)."""

    type: ClassVar[str] = "micro_batch_reduced"
    step: int
    micro_batch_size: int  # windows per micro-batch from now on
    times: int  # halvings in this run so far
    where: str = "step"  # step | eval
    run_dir: str = ""


@dataclass(frozen=True)
class StepSkipped(Event):
    """A step's loss or gradients were not finite: its update was not applied."""

    type: ClassVar[str] = "step_skipped"
    step: int
    in_a_row: int
    total: int
    run_dir: str = ""


@dataclass(frozen=True)
class RolledBack(Event):
    """Too many bad steps in a row: the run went back to its last checkpoint with a lower rate."""

    type: ClassVar[str] = "rolled_back"
    from_step: int
    to_step: int
    lr_scale: float
    run_dir: str = ""


@dataclass(frozen=True)
class ExportFinished(Event):
    """A run was exported; `path` is what was written."""

    type: ClassVar[str] = "exported"
    run_dir: str
    path: str
    format: str = "hf"


@dataclass(frozen=True)
class GeneratedText(Event):
    type: ClassVar[str] = "generated"
    text: str
    done: bool = False


@dataclass(frozen=True)
class PlanReady(Event):
    """A budget plan: the sized config (as config_to_dict gives it) and what to show about it."""

    type: ClassVar[str] = "plan"
    budget_s: float
    config: dict[str, Any]
    summary: list[str]
    reasons: list[str]
    warnings: list[str]


@dataclass(frozen=True)
class RunFinished(Event):
    type: ClassVar[str] = "finished"
    status: str  # completed | stopped | failed
    step: int
    val_loss: float | None
    val_bpb: float | None
    wall_s: float
    message: str = ""
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)


@dataclass(frozen=True)
class EngineError(Event):
    type: ClassVar[str] = "error"
    message: str
    recoverable: bool = False
    run_dir: str = ""  # the run this event belongs to ("" when not a run's)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, DataProgress, StepMetrics, EvalResult, CheckpointSaved, LogLine, PauseChanged,
                ExportFinished, MicroBatchReduced, StepSkipped, RolledBack,
                GeneratedText, PlanReady, RunFinished, EngineError)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event a JSON object describes; unknown fields (from a newer version) are ignored."""
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def for_run(event: Event, run_dir: str) -> Event:
    """`event` stamped with the run it belongs to (when it has a run_dir field still empty)."""
    if getattr(event, "run_dir", None) == "":
        return dataclasses.replace(event, run_dir=run_dir)
    return event
