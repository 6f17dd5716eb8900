"""Faults a run survives: recognising out-of-memory errors, and the seam that injects faults.

Out of memory shows up as `torch.OutOfMemoryError` on CUDA and as a plain RuntimeError from
the CPU allocator ("DefaultCPUAllocator: can't allocate memory"); both mean "this micro-batch
does not fit", which the step answers by halving it (engine/train/step.py).

Tests (and bench/faults.py) inject faults through the environment, so a child process gets
them too: LIGHTLM_FAULTS is a comma-separated list of
    oom:STEP:MAX      at optimizer step STEP (counted from 1, as events count), raise an out-of-memory error while the
                      micro-batch holds more than MAX windows (MAX 0: always)
    nan:FIRST-LAST    steps FIRST..LAST (inclusive) get a NaN loss
Nothing else reads it, and an empty or unset variable injects nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

FAULTS_ENV = "LIGHTLM_FAULTS"
CPU_ALLOCATOR_FAILURE = "can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says an allocation failed (CUDA or CPU)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (CPU_ALLOCATOR_FAILURE in text or "out of memory" in text.lower())


@dataclass(frozen=True)
class FaultPlan:
    oom_at: dict[int, int] = field(default_factory=dict)  # step -> largest micro-batch that fits
    nan_steps: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        oom_at, nan_steps = {}, set()
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, _, rest = item.partition(":")
            try:
                if kind == "oom":
                    step, largest = rest.split(":")
                    oom_at[int(step)] = int(largest)
                elif kind == "nan":
                    first, _, last = rest.partition("-")
                    nan_steps.update(range(int(first), int(last or first) + 1))
                else:
                    raise ValueError(kind)
            except ValueError:
                raise ValueError(f"{FAULTS_ENV}: cannot read {item!r}; use oom:STEP:MAX or nan:FIRST-LAST") from None
        return cls(oom_at, frozenset(nan_steps))

    @classmethod
    def from_environment(cls) -> FaultPlan:
        return cls.parse(os.environ.get(FAULTS_ENV, ""))

    def before_micro_batch(self, step: int, micro_batch_size: int) -> None:
        """Raise the injected out-of-memory error, if one is planned here."""
        largest = self.oom_at.get(step)
        if largest is not None and micro_batch_size > largest:
            raise torch.OutOfMemoryError(
                f"injected by {FAULTS_ENV}: out of memory at step {step} with {micro_batch_size} windows")

    def poisons(self, step: int) -> bool:
        return step in self.nan_steps
