"""A quick look at a data source before training on it: what it is, how big, which columns.

The Config screen's data-source picker calls this as the user types, so it reads only what
it must (file names and sizes, the first record of one file) and never the whole corpus, and
never reaches the network. Problems come back as sentences, the same ones training would
raise later, so the user fixes them before pressing Start.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.embedded import EMBEDDED, stdlib_root
from engine.data.sources import BUILDERS, looks_like_path

EMBEDDED_DESCRIPTIONS = {
    "python-stdlib": "the standard library's .py files",
    "python-docs": "pydoc's language-reference topics",
}
# Reading a huge folder's listing is still a walk: stop after this many matching files, or
# this many entries of any kind (someone typing "~" must not wait for their whole home).
MAX_FILES_LISTED = 10_000
MAX_ENTRIES_WALKED = 50_000


@dataclass(frozen=True)
class SourcePeek:
    """What `peek_source` found. `columns` is None where the text needs no column (txt / md)."""

    kind: str  # embedded | local | hub | missing
    summary: str
    columns: list[str] | None = None
    problem: str = ""
    files: list[str] = field(default_factory=list)

    def text_field_problem(self, text_field: str) -> str:
        """The sentence training would fail with for this text field, or ""."""
        if self.columns is None or text_field in self.columns:
            return ""
        return (f"data.text_field = {text_field!r}: the source has no such column; "
                f"its columns are {', '.join(self.columns)}.")


def peek_source(source: str) -> SourcePeek:
    """Describe `source` (a data.source value) cheaply."""
    source = source.strip()
    if not source:
        return SourcePeek("missing", "", problem="data.source is empty; pick an embedded corpus, a path or a hub id.")
    if source in EMBEDDED:
        return _peek_embedded(source)
    path = Path(source).expanduser()
    if path.exists():
        return _peek_local(path)
    if looks_like_path(source):
        return SourcePeek("missing", "", problem=f"{source}: no such file or folder.")
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    note = ("this machine is set offline: only a dataset already in the Hugging Face cache loads"
            if offline else "downloaded from the Hugging Face hub when training starts (cached after)")
    return SourcePeek("hub", f"hub dataset {source}: {note}", columns=None)


def _peek_embedded(name: str) -> SourcePeek:
    where = f" ({stdlib_root()})" if name == "python-stdlib" else ""
    return SourcePeek("embedded", f"embedded: {EMBEDDED_DESCRIPTIONS.get(name, name)}{where}, "
                                  "one document each; works offline")


def _peek_local(path: Path) -> SourcePeek:
    if path.is_dir():
        files, truncated = [], False
        for walked, candidate in enumerate(path.rglob("*")):
            if len(files) >= MAX_FILES_LISTED or walked >= MAX_ENTRIES_WALKED:
                truncated = True
                break
            if candidate.suffix in BUILDERS and candidate.is_file():
                files.append(candidate)
        files.sort()
        if not files:
            return SourcePeek("local", "", problem=f"{path}: the folder has no {', '.join(sorted(BUILDERS))} files.")
    else:
        files, truncated = [path], False
    kinds = {BUILDERS.get(p.suffix) for p in files}
    if None in kinds:
        return SourcePeek("local", "", problem=f"{path}: cannot read {path.suffix or 'files without a suffix'}; "
                                               f"use one of {', '.join(sorted(BUILDERS))}.")
    if len(kinds) > 1:
        return SourcePeek("local", "", problem=f"{path} mixes formats ({', '.join(sorted(kinds))}); "
                                               "point it at a folder of one kind.")
    kind = kinds.pop()
    size = sum(p.stat().st_size for p in files)
    more = "+" if truncated else ""
    summary = f"local {kind}: {len(files):,}{more} file(s), {size / 2**20:,.1f} MiB"
    if kind == "text":
        return SourcePeek("local", summary + ", one document per file", None, files=[str(p) for p in files[:3]])
    try:
        columns = _first_record_columns(files[0], kind)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return SourcePeek("local", summary, problem=f"{files[0]}: cannot read it as {kind} ({exc}).")
    return SourcePeek("local", summary, columns, files=[str(p) for p in files[:3]])


def _first_record_columns(path: Path, kind: str) -> list[str]:
    """The column names of a json / jsonl, csv or parquet file, from its first record."""
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    if kind == "parquet":
        import pyarrow.parquet as pq  # installed with datasets

        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
        if first.startswith("["):  # a .json file holding one array: read it whole (they are small)
            handle.seek(0)
            records = json.load(handle)
            return list(records[0]) if records and isinstance(records[0], dict) else []
    record = json.loads(first) if first else {}
    if not isinstance(record, dict):
        raise ValueError("the first line is not a JSON object")
    return list(record)
