"""Lengths of time as people write them: budgets typed as "45s", "5m", "1.5h", "1h30m", or hours
as a bare number (upstream LightLM's convention: 0.25 means a quarter of an hour), and durations
shown back (an ETA, a run's wall time)."""

from __future__ import annotations

import math
import re

from engine.errors import UserFacingError

UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
}
_PART = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)", re.IGNORECASE)
EXAMPLES = "e.g. 45s, 5m, 1.5h or 1h30m (a bare number means hours)"


class BudgetError(UserFacingError):
    """A budget that cannot be read, or that is not a positive length of time."""


def parse_budget(text: str) -> float:
    """Seconds in the budget `text`; BudgetError names what is wrong and how to write it."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise BudgetError(f"the budget is empty; give a length of time, {EXAMPLES}")
    seconds, position = 0.0, 0
    while position < len(cleaned):
        match = _PART.match(cleaned, position)
        if match is None or match.end() == position:
            raise BudgetError(f"cannot read the budget {text!r}; write a length of time, {EXAMPLES}")
        number, unit = float(match.group(1)), match.group(2)
        if unit and unit not in UNIT_SECONDS:
            raise BudgetError(f"unknown unit {unit!r} in the budget {text!r}; use s, m or h, {EXAMPLES}")
        if not unit and (position > 0 or match.end() < len(cleaned.rstrip())):
            raise BudgetError(f"the budget {text!r} has a number without a unit; {EXAMPLES}")
        seconds += number * (UNIT_SECONDS[unit] if unit else 3600)
        position = match.end()
    if not math.isfinite(seconds) or seconds <= 0:
        raise BudgetError(f"the budget {text!r} is not a positive length of time; {EXAMPLES}")
    return seconds


def format_budget(seconds: float) -> str:
    """A budget as a person would write it back: 45s, 5m, 1.5h, 1h30m."""
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours}h{rest}m" if rest else f"{hours}h"


def format_duration(seconds: float) -> str:
    """An ETA or a wall time: 4m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
