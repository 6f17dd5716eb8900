"""Writing a split's tokens to disk as they are made, so memory stays flat in the corpus size.

Documents are encoded a batch at a time (the tokenizers library spreads a batch over the
cores), joined with EOS into one array of the store's dtype and appended to the file; nothing
holds more than one batch. Every id is checked against the dtype before it is written: a
vocabulary that outgrows uint16 must never wrap silently into wrong tokens.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.tokenizer import TextTokenizer
from engine.errors import UserFacingError

# A batch is encoded at once, and its ids pass through Python lists (about 8-36 bytes a token):
# capping its text caps that memory whatever the documents' sizes.
BATCH_DOCUMENTS = 512
BATCH_CHARACTERS = 4 * 2**20
REPORT_EVERY_S = 0.5  # progress reports a second, at most two


class TokenRangeError(UserFacingError):
    """A token id the store's dtype cannot hold."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id (0 .. vocab_size - 1) fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


@dataclass
class Written:
    """What a split's file holds, counted while it was written."""

    tokens: int = 0
    documents: int = 0
    bytes: int = 0  # UTF-8 bytes of the documents' text


def write_token_file(texts: Iterable[str], tokenizer: TextTokenizer, path: Path, dtype: np.dtype,
                     on_progress: Callable[[Written], None] | None = None) -> Written:
    """Encode `texts` into `path` (each document followed by EOS), fsynced; returns the counts.
    `on_progress` gets the running counts about twice a second and once at the end."""
    eos, limit = tokenizer.eos_id, np.iinfo(dtype).max
    written, last_report = Written(), time.monotonic()
    with open(path, "wb") as handle:
        for batch in _batches(texts, BATCH_DOCUMENTS, BATCH_CHARACTERS):
            encoded = tokenizer.encode_batch(batch)
            count = sum(len(ids) for ids in encoded) + len(encoded)
            ids = np.fromiter(itertools.chain.from_iterable(itertools.chain(e, (eos,)) for e in encoded),
                              dtype=np.int64, count=count)
            if count and int(ids.max()) > limit:
                raise TokenRangeError(
                    f"the tokenizer produced token id {int(ids.max())}, which {np.dtype(dtype).name} cannot hold "
                    f"(its vocabulary reports {tokenizer.vocab_size} tokens); use a tokenizer whose length "
                    "covers every id it produces")
            handle.write(ids.astype(dtype).tobytes())
            written.tokens += count
            written.documents += len(batch)
            written.bytes += sum(len(text.encode("utf-8", "surrogatepass")) for text in batch)
            now = time.monotonic()
            if on_progress is not None and now - last_report >= REPORT_EVERY_S:
                last_report = now
                on_progress(written)
        handle.flush()
        os.fsync(handle.fileno())
    if on_progress is not None:
        on_progress(written)
    return written


def _batches(texts: Iterable[str], documents: int, characters: int) -> Iterator[list[str]]:
    """Consecutive documents, at most `documents` of them and (past the first) `characters`."""
    batch: list[str] = []
    size = 0
    for text in texts:
        if batch and (len(batch) == documents or size + len(text) > characters):
            yield batch
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        yield batch
