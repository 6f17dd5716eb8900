"""Runs side by side, as plain data: each run's curves read from its events.jsonl (and kept up to
date while it trains), the settings that differ between their config.toml files, and their
final figures. No widgets, so the comparison screen and its benchmark share it.

Curves are kept against all three x axes at once (step, tokens seen, wall time), so switching
the axis costs a redraw, not a re-read. Runs may use different tokenizers: loss is per token
and then says nothing across runs, so the comparison is made on bits per byte, and a train
loss is converted with the run's own val bits-per-byte / val-loss ratio.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.runs.run_dir import EVENTS_FILE

X_AXES = ("tokens", "wall", "step")
X_LABELS = {"tokens": "tokens seen", "wall": "wall time (s)", "step": "step"}
METRICS = ("val_bpb", "train")
# Stable colours: run i of a comparison is always drawn (and named in the legend) in COLOURS[i].
COLOURS = ("bright_blue", "bright_yellow", "bright_green", "bright_magenta", "bright_cyan", "bright_red",
           "white", "dark_orange")
# Settings that always differ and say nothing about the runs themselves.
IGNORED_SETTINGS = {"name", "train.runs_dir", "data.cache_dir", "train.init_from_sha256"}


def parse_lines(data: bytes) -> list[dict]:
    """The JSON objects of complete lines. All at once as one array (a third faster than line by
    line on a 10,000-report log, which opening a comparison of five runs reads five of); a
    damaged log falls back to line by line, skipping the lines that do not parse."""
    lines = data.splitlines()
    try:
        return json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        pass
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@dataclass(slots=True)
class Point:
    step: int
    tokens: float
    wall: float
    value: float

    def x(self, axis: str) -> float:
        return getattr(self, axis)


@dataclass
class RunCurves:
    """One run of a comparison: its curves and figures, folded from its events.jsonl.
    `follow()` reads what was appended since the last call (a run still training)."""

    path: Path
    name: str = ""
    settings: dict[str, object] = field(default_factory=dict)
    tokenizer_id: str = ""
    tokens_per_step: int = 0
    params: int = 0
    active_params: int = 0
    train: list[Point] = field(default_factory=list)
    val_bpb: list[Point] = field(default_factory=list)
    val_loss: list[Point] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    status: str = "unfinished"
    final_bpb: float | None = None
    wall_s: float = 0.0
    version: int = 0  # bumped by every follow() that found something new
    _offset: int = 0
    _last_wall: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.name = self.name or self.path.name
        self.settings = read_settings(self.path)
        self.tokenizer_id = tokenizer_id(self.path, self.settings)

    def follow(self) -> bool:
        """Fold the events appended since the last call; returns whether there were any.
        Called from one thread (the screen's reader); the parsing happens outside the lock the
        UI's reads take, so a long log read for the first time never holds the UI."""
        path = self.path / EVENTS_FILE
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a last line still being written is read whole next time
        self._offset += len(complete)
        events = parse_lines(complete)
        if not events:
            return False
        with self._lock:
            for event in events:
                try:
                    self._fold(event)
                except (KeyError, TypeError, ValueError):
                    continue
            self.version += 1
        return True

    def _fold(self, event: dict) -> None:
        kind = event["type"]
        if kind == "step":
            self._last_wall = float(event.get("elapsed_s") or self._last_wall)
            self.wall_s = max(self.wall_s, self._last_wall)
            step = event["step"]
            self.train.append(Point(step, step * self.tokens_per_step, self._last_wall, event["loss"]))
            self.tokens_per_s.append(event["tokens_per_s"])
        elif kind == "eval":
            step = event["step"]
            point = (step, step * self.tokens_per_step, self._last_wall)
            self.val_bpb.append(Point(*point, event["val_bpb"]))
            self.val_loss.append(Point(*point, event["val_loss"]))
            self.final_bpb = event["val_bpb"]
        elif kind == "run_started":
            self.tokens_per_step = event.get("tokens_per_step") or self.tokens_per_step
            self.params = event.get("params") or self.params
            self.active_params = event.get("active_params") or self.params
            self.status = "running"
        elif kind == "finished":
            self.status = event["status"]
            self.wall_s = max(self.wall_s, event.get("wall_s") or 0.0)
            if event.get("val_bpb") is not None:
                self.final_bpb = event["val_bpb"]

    @property
    def bits_per_nat_token(self) -> float | None:
        """val bits/byte per val loss (nats/token): converts this run's losses to bits/byte."""
        for bpb, loss in zip(reversed(self.val_bpb), reversed(self.val_loss)):
            if loss.value > 0:
                return bpb.value / loss.value
        return None

    def series(self, metric: str, axis: str, in_bits_per_byte: bool = False) -> list[tuple[float, float]]:
        """(x, y) points of `metric` ("val_bpb" or "train") against `axis` ("tokens", "wall",
        "step"). With `in_bits_per_byte` the train loss is converted to bits/byte (empty until
        the run has evaluated once)."""
        with self._lock:
            if metric == "val_bpb":
                return [(p.x(axis), p.value) for p in self.val_bpb]
            points = list(self.train)
            scale = 1.0
            if in_bits_per_byte:
                scale = self.bits_per_nat_token
                if scale is None:
                    return []
        return [(p.x(axis), p.value * scale) for p in points]

    def figures(self) -> dict[str, str]:
        """The final figures a comparison table shows, formatted."""
        with self._lock:
            speeds = list(self.tokens_per_s)
        wall = f"{self.wall_s:,.0f} s" if self.wall_s else "-"
        params = "-"
        if self.params:
            params = f"{self.params / 1e6:.2f}M"
            if self.active_params and self.active_params < self.params:
                params += f" ({self.active_params / 1e6:.2f}M active)"
        return {
            "val bpb": f"{self.final_bpb:.4f}" if self.final_bpb is not None else "-",
            "tokens/s": f"{statistics.median(speeds):,.0f}" if speeds else "-",
            "wall time": wall + ("" if self.status not in ("running", "unfinished") else " so far"),
            "parameters": params,
            "status": self.status,
        }


def read_settings(run_dir: Path) -> dict[str, object]:
    """The run's config.toml flattened to {"section.key": value} (read as written: a config from
    another version of the app still compares)."""
    try:
        with open(Path(run_dir) / "config.toml", "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def tokenizer_id(run_dir: Path, settings: dict[str, object]) -> str:
    """What identifies a run's tokenizer: its saved tokenizer.json's hash where there is one,
    else what the config says (kind, vocabulary, and for a trained BPE the corpus)."""
    saved = Path(run_dir) / "tokenizer" / "tokenizer.json"
    if saved.is_file():
        return hashlib.sha256(saved.read_bytes()).hexdigest()[:16]
    kind = settings.get("data.tokenizer", "bpe")
    if kind == "bpe":
        return f"bpe-{settings.get('data.tokenizer_vocab_size')}-{settings.get('data.source')}"
    return str(kind)


def differing_settings(runs: list[RunCurves]) -> list[tuple[str, list[str]]]:
    """(setting, each run's value) for the settings whose values are not all the same."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.settings if k not in keys]
    rows = []
    for key in keys:
        if key in IGNORED_SETTINGS:
            continue
        values = [_text(run.settings.get(key, "-")) for run in runs]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def tokenizers_differ(runs: list[RunCurves]) -> bool:
    return len({run.tokenizer_id for run in runs}) > 1


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)
