"""Learning-rate schedule: linear warmup, then cosine decay to min_lr_ratio x the peak."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, peak: float, warmup_ratio: float, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup rises linearly and reaches the peak at its last step (never 0 at step 0); the
    cosine then ends exactly at min_lr_ratio x peak on the final step.
    """
    warmup_steps = round(warmup_ratio * total_steps)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = peak * min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at_progress(progress: float, peak: float, warmup_ratio: float, min_lr_ratio: float) -> float:
    """Learning rate at `progress` (0..1) through a run whose length is time, not steps.

    The same shape as `lr_at`: linear warmup over the first warmup_ratio of the run (from 1 %
    of the peak, so the first step is not wasted), then cosine decay to min_lr_ratio x peak,
    reached exactly at progress 1.
    """
    progress = min(1.0, max(0.0, progress))
    if warmup_ratio > 0 and progress < warmup_ratio:
        return peak * max(progress / warmup_ratio, 0.01)
    decay = (progress - warmup_ratio) / (1.0 - warmup_ratio) if warmup_ratio < 1 else 1.0
    floor = peak * min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * decay))
