"""Where LightLM keeps files that are not part of a run: the per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lightlm-tui, else ~/.cache/lightlm-tui (token stores, the app's output log)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightlm-tui"
