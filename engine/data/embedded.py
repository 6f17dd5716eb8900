"""Corpora that ship with every Python install, so a first run needs no network.

`python-stdlib`: the standard library's own .py sources (tests, IDLE's tests and
site-packages left out), one document per file, in sorted path order.
`python-docs`: pydoc's topic help texts (the prose of the language reference), one per topic.
"""

from __future__ import annotations

import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Document:
    """One text and where it came from (a path relative to its corpus, or a topic name)."""

    name: str
    text: str


def stdlib_root() -> Path:
    """The folder of this Python's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def python_stdlib_documents() -> list[Document]:
    """Every standard-library .py file as a Document, in a deterministic order."""
    root = stdlib_root()
    documents = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_DIRS.intersection(relative.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of files are deliberately not UTF-8 (encoding tests)
        if text.strip():
            documents.append(Document(relative.as_posix(), text))
    return documents


def python_docs_documents() -> list[Document]:
    """pydoc's topic texts as Documents, sorted by topic."""
    from pydoc_data.topics import topics

    return [Document(name, topics[name]) for name in sorted(topics) if topics[name].strip()]


EMBEDDED = {
    "python-stdlib": python_stdlib_documents,
    "python-docs": python_docs_documents,
}


def embedded_documents(name: str) -> list[Document]:
    """The documents of embedded corpus `name` (see EMBEDDED)."""
    return EMBEDDED[name]()


def corpus_origin() -> str:
    """What an embedded corpus was read from, for the run's records."""
    return f"Python {platform.python_version()} at {stdlib_root()}"
