"""Plain-text files (.txt, .md) as documents, read a line at a time, never whole.

A small file is one document, so windows never straddle two short files. A large one (a
book, a scraped dump, tinyshakespeare's single input.txt) is cut at blank lines into documents
of about DOCUMENT_CHARACTERS, so it can be split into training and held-out text, and so no
document is bigger than MAX_DOCUMENT_CHARACTERS (a text without blank lines is cut at a line
end, a line longer than that mid-line). The pieces of a file join back into exactly its text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from engine.errors import UserFacingError

DOCUMENT_CHARACTERS = 64 * 1024
MAX_DOCUMENT_CHARACTERS = 1024 * 1024


class NotUtf8Error(UserFacingError):
    """A text file that is not UTF-8."""


def file_documents(path: Path, target: int = DOCUMENT_CHARACTERS,
                   cap: int = MAX_DOCUMENT_CHARACTERS) -> Iterator[str]:
    """The documents of one text file, in order (universal newlines, as Python reads text)."""
    try:
        with open(path, encoding="utf-8") as handle:
            piece: list[str] = []
            size = 0
            for line in iter(lambda: handle.readline(cap), ""):
                piece.append(line)
                size += len(line)
                if size >= cap or (size >= target and not line.strip()):
                    yield "".join(piece)
                    piece, size = [], 0
            if piece:
                yield "".join(piece)
    except UnicodeDecodeError as exc:
        raise NotUtf8Error(f"{path} is not UTF-8 text ({exc.reason}); convert it to UTF-8 (for example "
                           "with iconv) or leave it out of data.source") from None


def text_rows(files: list[str], stamps: list[tuple[int, int]]) -> Iterator[dict[str, str]]:
    """Rows {"text": document} of every file in order, for datasets' from_generator. `stamps`
    (each file's size and modification time) is not read here: it is in the arguments so that a
    changed file is a new dataset, not the cached one."""
    for name in files:
        for document in file_documents(Path(name)):
            yield {"text": document}


def stamps_of(files: list[Path]) -> list[tuple[int, int]]:
    return [(os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files]
