"""Pure functions the plots share: smoothing, log-y, one-row text (no widgets, no torch).

Smoothing is the exponential moving average TensorBoard and W&B draw, debiased: the average
starts at zero, so early points are divided by (1 - w^n), which makes the first smoothed value
equal the first raw one instead of dragging the curve down towards zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

# The smoothing weights the `m` key cycles through (0 = off); TensorBoard's slider default is 0.6.
SMOOTHING_STEPS = (0.0, 0.6, 0.9, 0.99)


def ema_debiased(values: Iterable[float], weight: float) -> list[float]:
    """`values` smoothed by an exponential moving average of `weight` (0 returns them as they
    are), debiased like TensorBoard's: smoothed_n = ema_n / (1 - weight^n). Non-finite values
    pass through unsmoothed and do not poison the average."""
    values = list(values)
    if weight <= 0:
        return values
    out, ema, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        ema = weight * ema + (1 - weight) * v
        count += 1
        out.append(ema / (1 - weight ** count))
    return out


def next_smoothing(weight: float) -> float:
    """The weight after `weight` in SMOOTHING_STEPS (wrapping to off)."""
    steps = SMOOTHING_STEPS
    index = min(range(len(steps)), key=lambda i: abs(steps[i] - weight))
    return steps[(index + 1) % len(steps)]


def smoothing_label(weight: float) -> str:
    return f"EMA {weight:g}" if weight > 0 else "raw"


def log10_safe(values: Sequence[float]) -> list[float]:
    """log10 of each value; values at or below zero become the smallest positive one's log
    (a loss is never below zero, but a plot must not crash on a 0.0)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    floor = min(positive) if positive else 1.0
    return [math.log10(v if v > 0 and math.isfinite(v) else floor) for v in values]


def one_row(line: str, width: int) -> str:
    """`line` on one row of `width` cells: the home folder as ~, newlines as spaces, and a line
    still too long cut in the middle of its longest word (usually a path) with '...'."""
    home = os.path.expanduser("~")
    text = " ".join(line.replace(home, "~").split()) if home and home != "/" else " ".join(line.split())
    if width <= 0 or len(text) <= width:
        return text
    words = text.split(" ")
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    over = len(text) - width
    word = words[longest]
    if len(word) - over >= 8:  # shorten the path-like word, keeping its start and its end
        keep = len(word) - over - 3
        words[longest] = word[: keep // 2] + "..." + word[len(word) - (keep - keep // 2):]
        text = " ".join(words)
    return text if len(text) <= width else text[: width - 3] + "..."
