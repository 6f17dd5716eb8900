"""Pre-tokenised corpora on disk: a flat token array per split, cached by content.

Documents are tokenised once, a batch at a time straight to disk (engine/data/token_writer.py),
joined with EOS into flat uint16 arrays (uint32 past 65,536 tokens) that later runs open as
numpy memmaps; progress goes to an `on_progress` callback as DataProgress events. The cache
key is a fingerprint of the corpus text, the tokenizer choice and the split settings, so a
second start on the same data skips all of it. An entry counts only once its `meta.json`
exists; it is written last, after the arrays are complete and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DataConfig
from engine.data.token_writer import Written, token_dtype, write_token_file
from engine.data.tokenizer import TextTokenizer, build_tokenizer, load_pretrained_tokenizer
from engine.machine.paths import cache_dir
from engine.runs.events import DataProgress

STORE_VERSION = 1
# Documents read from a dataset at a time: a read batch becomes Python strings, so it is kept
# small enough that memory does not follow the documents' sizes (64 of 64 kB: 4 MB).
READ_BATCH = 64


@dataclass(frozen=True)
class StoreMeta:
    """What a cached token store holds, written to its meta.json."""

    version: int
    train_tokens: int
    val_tokens: int
    train_documents: int
    val_documents: int
    val_bytes: int
    dtype: str
    vocab_size: int
    eos_id: int

    @property
    def val_bytes_per_token(self) -> float:
        """UTF-8 bytes of held-out text per held-out token (for bits per byte)."""
        return self.val_bytes / max(1, self.val_tokens)


@dataclass
class TokenStore:
    """A prepared corpus: the tokenizer, both splits as token arrays, and their description."""

    directory: Path
    tokenizer: TextTokenizer
    train: np.ndarray
    val: np.ndarray
    meta: StoreMeta
    from_cache: bool


def validation_indices(num_documents: int, val_fraction: float) -> np.ndarray:
    """Held-out document indices: evenly spread, deterministic, at least one, never all."""
    count = min(num_documents - 1, max(1, round(val_fraction * num_documents)))
    return np.unique(np.linspace(0, num_documents - 1, count).round().astype(np.int64))


def fingerprint(dataset: Any, data: DataConfig) -> str:
    """A key that changes when the text, the tokenizer choice or the split settings change."""
    digest = hashlib.sha256()
    for key in ("tokenizer", "tokenizer_vocab_size", "val_fraction"):
        digest.update(f"{key}={getattr(data, key)!r};".encode())
    digest.update(f"documents={len(dataset)};v{STORE_VERSION};".encode())
    for batch in dataset.iter(batch_size=READ_BATCH):
        for text in batch["text"]:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()[:20]


def prepare_token_store(dataset: Any, data: DataConfig, cache_root: Path | None = None,
                        on_progress: Callable[[DataProgress], None] | None = None) -> TokenStore:
    """Tokenise `dataset` (a "text" Dataset) per `data`, or reopen the cached result.
    `on_progress` hears each long phase of a new preparation (a reopened one has none)."""
    root = Path(data.cache_dir).expanduser() if data.cache_dir else (cache_root or cache_dir())
    directory = root / "tokens" / fingerprint(dataset, data)
    if (directory / "meta.json").is_file():
        return _open(directory, from_cache=True)

    val_index = validation_indices(len(dataset), data.val_fraction)
    is_val = np.zeros(len(dataset), dtype=bool)
    is_val[val_index] = True
    train_docs = dataset.select(np.flatnonzero(~is_val))
    val_docs = dataset.select(val_index)
    tell = on_progress or (lambda event: None)
    if data.tokenizer == "bpe":
        tell(DataProgress("training the tokenizer"))
    # The BPE learns from training documents only, so validation text stays unseen.
    tokenizer = build_tokenizer(data.tokenizer, _texts(train_docs), data.tokenizer_vocab_size)

    root.joinpath("tokens").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tokenizer.save(staging / "tokenizer")
        dtype = token_dtype(tokenizer.vocab_size)
        total, tokenising = len(dataset), time.monotonic()

        def progress(before: Written):  # one count over both splits: train first, then val
            def report(done: Written) -> None:
                tell(DataProgress("tokenising", before.documents + done.documents, total,
                                  before.bytes + done.bytes, before.tokens + done.tokens,
                                  time.monotonic() - tokenising))
            return report

        train = write_token_file(_texts(train_docs), tokenizer, staging / "train.bin", dtype, progress(Written()))
        val = write_token_file(_texts(val_docs), tokenizer, staging / "val.bin", dtype, progress(train))
        meta = StoreMeta(
            version=STORE_VERSION, train_tokens=train.tokens, val_tokens=val.tokens,
            train_documents=train.documents, val_documents=val.documents, val_bytes=val.bytes,
            dtype=dtype.name, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id,
        )
        (staging / "meta.json").write_text(json.dumps(asdict(meta), indent=2))
        if directory.exists():  # a stale entry without meta.json: an interrupted earlier build
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _open(directory, from_cache=False)


def _texts(dataset: Any):
    for batch in dataset.iter(batch_size=READ_BATCH):
        yield from batch["text"]


def _open(directory: Path, from_cache: bool) -> TokenStore:
    meta = StoreMeta(**json.loads((directory / "meta.json").read_text()))
    dtype = np.dtype(meta.dtype)
    tokenizer = load_pretrained_tokenizer(str(directory / "tokenizer"))
    return TokenStore(
        directory=directory,
        tokenizer=tokenizer,
        train=np.memmap(directory / "train.bin", dtype=dtype, mode="r", shape=(meta.train_tokens,)),
        val=np.memmap(directory / "val.bin", dtype=dtype, mode="r", shape=(meta.val_tokens,)),
        meta=meta,
        from_cache=from_cache,
    )
