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
