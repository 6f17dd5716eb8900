"""Keep stray output off the app's screen: file descriptors 1 and 2 go to a log while it runs.

Textual captures Python's `print` and `sys.stderr` while an app runs, but not what is written
straight to the file descriptors: C/C++ and Rust libraries (torch, OpenMP, tokenizers), and
child processes such as torch.compile's workers, which inherit them. Any of that would land in
the middle of the drawn screen. So, for the app's lifetime, fds 1 and 2 point at a log file,
and Textual is handed the terminal through duplicates of the original descriptors (its driver
writes to `sys.__stderr__`; terminal size is read from `sys.__stdout__`). On exit everything is
put back and, if anything was caught, one line says where it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def stray_output_to(log_path: Path, force: bool = False) -> Iterator[Path | None]:
    """Within the block, writes to fds 1 and 2 go to `log_path`; yields the path, or None when
    there is no terminal to protect (not a tty, or not POSIX) and nothing was changed."""
    terminal = sys.__stderr__
    if os.name != "posix" or terminal is None or sys.__stdout__ is None or not (force or terminal.isatty()):
        yield None
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    originals = (sys.__stdout__, sys.__stderr__)
    to_terminal = {fd: _reopen(os.dup(fd), stream) for fd, stream in ((1, sys.__stdout__), (2, sys.__stderr__))}
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.__stdout__, sys.__stderr__ = to_terminal[1], to_terminal[2]
        yield log_path
    finally:
        for stream in to_terminal.values():
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        sys.__stdout__, sys.__stderr__ = originals
        for stream in to_terminal.values():
            stream.close()


def _reopen(fd: int, like: TextIO) -> TextIO:
    """A text stream on `fd` with the encoding of the stream it duplicates."""
    return os.fdopen(fd, "w", encoding=like.encoding or "utf-8", errors=like.errors or "strict", buffering=1)


def caught_summary(log_path: Path | None) -> str:
    """One line about what the log caught, or "" when it caught nothing."""
    if log_path is None or not log_path.is_file() or log_path.stat().st_size == 0:
        return ""
    lines = len(log_path.read_bytes().splitlines()) or 1
    return f"lightlm-tui: libraries wrote {lines} line(s) of output while the app ran; they are in {log_path}\n"
