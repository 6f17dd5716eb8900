"""Where text comes from: an embedded corpus, a local file or folder, or a hub dataset.

Everything arrives as a Hugging Face `datasets.Dataset` with one string column, "text", one
row per document. Each way this can fail is a `DataSourceError` whose message names the
problem and the fix, never a stack of retries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.config import DataConfig
from engine.data.embedded import EMBEDDED, embedded_documents
from engine.data.quiet import quiet_datasets
from engine.data.text_files import NotUtf8Error, stamps_of, text_rows
from engine.errors import UserFacingError

# File suffix -> datasets builder.
BUILDERS = {".txt": "text", ".md": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataSourceError(UserFacingError):
    """A data source that cannot be read; the message says what to use instead."""


def load_documents(data: DataConfig) -> Any:
    """The corpus `data.source` names, as a Dataset with a "text" column, limited to
    `data.subset_size` documents when that is set."""
    with quiet_datasets():
        return _load_documents(data)


def _load_documents(data: DataConfig) -> Any:
    if data.source in EMBEDDED:
        dataset = _embedded(data.source)
    elif Path(data.source).expanduser().exists():
        dataset = _local(Path(data.source).expanduser(), data)
    elif looks_like_path(data.source):
        raise DataSourceError(
            f"data.source = {data.source!r}: no such file or folder. Give an existing path, an embedded "
            f"corpus ({', '.join(EMBEDDED)}), or a hub dataset id such as wikitext."
        )
    else:
        dataset = _hub(data)
    limited = bool(data.subset_size and data.subset_size < len(dataset))
    if limited:
        dataset = dataset.select(range(data.subset_size))
    if len(dataset) < 2:
        fix = "raise data.subset_size" if limited else "add text (a text file over 64 kB is split into documents)"
        raise DataSourceError(
            f"data.source = {data.source!r} holds {len(dataset)} document(s); at least 2 are needed to hold "
            f"one out for validation: {fix}."
        )
    return dataset


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or (os.sep in source and Path(source).suffix in BUILDERS)


def _embedded(name: str) -> Any:
    from datasets import Dataset

    docs = embedded_documents(name)
    return Dataset.from_dict({"text": [d.text for d in docs]})


def _local(path: Path, data: DataConfig) -> Any:
    from datasets import Dataset, load_dataset

    files = sorted(p for p in path.rglob("*") if p.suffix in BUILDERS and p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataSourceError(
            f"data.source = {str(path)!r}: the folder has no {', '.join(sorted(BUILDERS))} files."
        )
    builders = {BUILDERS.get(p.suffix) for p in files}
    if None in builders:
        raise DataSourceError(
            f"data.source = {str(path)!r}: cannot read {path.suffix or 'files without a suffix'}; "
            f"use one of {', '.join(sorted(BUILDERS))}."
        )
    if len(builders) > 1:
        raise DataSourceError(
            f"data.source = {str(path)!r} mixes formats ({', '.join(sorted(builders))}); "
            "point it at a folder of one kind."
        )
    builder = builders.pop()
    try:
        if builder == "text":  # a small file is one document, a large one is cut at blank lines
            dataset = Dataset.from_generator(text_rows, gen_kwargs={
                "files": [str(p) for p in files], "stamps": stamps_of(files)})
        else:
            dataset = load_dataset(builder, data_files=[str(p) for p in files], split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        cause = _our_error(exc)
        if cause is not None:
            raise DataSourceError(f"data.source = {str(path)!r}: {cause}") from None
        raise DataSourceError(
            f"data.source = {str(path)!r}: could not read it as {builder} ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Check the file's format."
        ) from None
    return _text_column(dataset, data, f"{path}")


def _our_error(exc: BaseException) -> NotUtf8Error | None:
    """Our own sentence, when datasets wrapped it (it re-raises a generator's error as its own)."""
    while exc is not None:
        if isinstance(exc, NotUtf8Error):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _hub(data: DataConfig) -> Any:
    from datasets import load_dataset

    try:
        dataset = load_dataset(data.source, data.hub_config or None, split=data.split)
    except Exception as exc:
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        reason = (
            "this machine is offline and the dataset is not in the Hugging Face cache"
            if offline or "offline" in str(exc).lower() or "connect" in str(exc).lower()
            else f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
        )
        raise DataSourceError(
            f"cannot load hub dataset {data.source!r}"
            f"{f' ({data.hub_config})' if data.hub_config else ''}: {reason}. Use an embedded corpus "
            f"({', '.join(EMBEDDED)}) or a local file or folder instead."
        ) from None
    return _text_column(dataset, data, data.source)


def _text_column(dataset: Any, data: DataConfig, where: str) -> Any:
    if data.text_field not in dataset.column_names:
        raise DataSourceError(
            f"data.text_field = {data.text_field!r}: {where} has no such column; its columns are "
            f"{', '.join(dataset.column_names)}."
        )
    dataset = dataset.select_columns([data.text_field])
    if data.text_field != "text":
        dataset = dataset.rename_column(data.text_field, "text")
    return dataset.filter(lambda row: isinstance(row["text"], str) and row["text"].strip() != "")
