"""Pre-tokenised corpora on disk: a flat token array per split, cached by content.

Documents are tokenised once (batched `Dataset.map`), joined with EOS, and written as flat
uint16 arrays (uint32 past 65,535 tokens) that later runs open as numpy memmaps. The cache
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DataConfig
from engine.data.quiet import quiet_datasets
from engine.machine.paths import cache_dir
from engine.data.tokenizer import TextTokenizer, build_tokenizer, load_pretrained_tokenizer

STORE_VERSION = 1


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
    for batch in dataset.iter(batch_size=1024):
        for text in batch["text"]:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()[:20]


def prepare_token_store(dataset: Any, data: DataConfig, cache_root: Path | None = None) -> TokenStore:
    """Tokenise `dataset` (a "text" Dataset) per `data`, or reopen the cached result."""
    root = Path(data.cache_dir).expanduser() if data.cache_dir else (cache_root or cache_dir())
    directory = root / "tokens" / fingerprint(dataset, data)
    if (directory / "meta.json").is_file():
        return _open(directory, from_cache=True)

    val_index = validation_indices(len(dataset), data.val_fraction)
    is_val = np.zeros(len(dataset), dtype=bool)
    is_val[val_index] = True
    train_docs = dataset.select(np.flatnonzero(~is_val))
    val_docs = dataset.select(val_index)
    # The BPE learns from training documents only, so validation text stays unseen.
    tokenizer = build_tokenizer(data.tokenizer, _texts(train_docs), data.tokenizer_vocab_size)

    root.joinpath("tokens").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tokenizer.save(staging / "tokenizer")
        dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
        train_count = _write_tokens(train_docs, tokenizer, staging / "train.bin", dtype)
        val_count = _write_tokens(val_docs, tokenizer, staging / "val.bin", dtype)
        meta = StoreMeta(
            version=STORE_VERSION, train_tokens=train_count, val_tokens=val_count,
            train_documents=len(train_docs), val_documents=len(val_docs),
            val_bytes=sum(len(t.encode("utf-8", "surrogatepass")) for t in _texts(val_docs)),
            dtype=np.dtype(dtype).name, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id,
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
    for batch in dataset.iter(batch_size=1024):
        yield from batch["text"]


def _write_tokens(dataset: Any, tokenizer: TextTokenizer, path: Path, dtype) -> int:
    """Tokenise in batches and append to `path`, each document followed by EOS."""
    eos = tokenizer.eos_id

    def encode(batch):
        return {"ids": [ids + [eos] for ids in tokenizer.encode_batch(batch["text"])]}

    with quiet_datasets():
        encoded = dataset.map(encode, batched=True, batch_size=256, remove_columns=["text"], keep_in_memory=True)
    count = 0
    with open(path, "wb") as handle:
        for batch in encoded.iter(batch_size=1024):
            for ids in batch["ids"]:
                array = np.asarray(ids, dtype=dtype)
                handle.write(array.tobytes())
                count += len(array)
        handle.flush()
        os.fsync(handle.fileno())
    return count


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
