"""Faults a run survives: recognising out-of-memory errors, and the seam that injects faults.

Out of memory shows up as `torch.OutOfMemoryError` on CUDA and as a plain RuntimeError from
the CPU allocator ("DefaultCPUAllocator: can't allocate memory"); both mean "this micro-batch
does not fit", which the step answers by halving it (engine/train/step.py).

Tests (and bench/faults.py) inject faults through the environment, so a child process gets
them too: LIGHTLM_FAULTS is a comma-separated list of
    oom:STEP:MAX      at optimizer step STEP (counted from 1, as events count), raise an out-of-memory error while the
                      micro-batch holds more than MAX windows (MAX 0: always)
    oom:STEP:MAX@R    the same on DDP rank R alone
    oom-eval:STEP:MAX[@R]  the same in the evaluation after step STEP
    nan:FIRST-LAST    steps FIRST..LAST (inclusive) get a NaN loss
    kill:STEP         the process kills itself (SIGKILL) while writing the checkpoint of step
                      STEP, its weights written and the rest not
Nothing else reads it, and an empty or unset variable injects nothing.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import torch

FAULTS_ENV = "LIGHTLM_FAULTS"
CPU_ALLOCATOR_FAILURE = "can't allocate memory"


class OutOfMemoryAtOneWindow(RuntimeError):
    """Even one window per micro-batch does not fit in memory (a step's or an evaluation's)."""

    def __init__(self, step: int, where: str = "step") -> None:
        super().__init__(f"out of memory at {where} {step} with one window per micro-batch")
        self.step, self.where = step, where


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says an allocation failed (CUDA or CPU)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (CPU_ALLOCATOR_FAILURE in text or "out of memory" in text.lower())


@dataclass(frozen=True)
class FaultPlan:
    oom_at: dict[int, int] = field(default_factory=dict)  # step -> largest micro-batch that fits
    eval_oom_at: dict[int, int] = field(default_factory=dict)  # the same for the evaluation after a step
    nan_steps: frozenset[int] = frozenset()
    kill_in_checkpoint: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str, rank: int = 0) -> FaultPlan:
        """The faults planned for DDP rank `rank` (0 on one process)."""
        oom_at, eval_oom_at, nan_steps, kills = {}, {}, set(), set()
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, _, rest = item.partition(":")
            try:
                if kind in ("oom", "oom-eval"):
                    step, largest = rest.split(":")
                    largest, _, on_rank = largest.partition("@")
                    if not on_rank or int(on_rank) == rank:
                        (oom_at if kind == "oom" else eval_oom_at)[int(step)] = int(largest)
                elif kind == "kill":
                    kills.add(int(rest))
                elif kind == "nan":
                    first, _, last = rest.partition("-")
                    nan_steps.update(range(int(first), int(last or first) + 1))
                else:
                    raise ValueError(kind)
            except ValueError:
                raise ValueError(f"{FAULTS_ENV}: cannot read {item!r}; use oom:STEP:MAX[@RANK], "
                                 "oom-eval:STEP:MAX[@RANK], nan:FIRST-LAST or kill:STEP") from None
        return cls(oom_at, eval_oom_at, frozenset(nan_steps), frozenset(kills))

    @classmethod
    def from_environment(cls, rank: int = 0) -> FaultPlan:
        return cls.parse(os.environ.get(FAULTS_ENV, ""), rank)

    def before_micro_batch(self, step: int, micro_batch_size: int) -> None:
        """Raise the injected out-of-memory error, if one is planned here."""
        largest = self.oom_at.get(step)
        if largest is not None and micro_batch_size > largest:
            raise torch.OutOfMemoryError(
                f"injected by {FAULTS_ENV}: out of memory at step {step} with {micro_batch_size} windows")

    def before_eval_pass(self, step: int, windows: int) -> None:
        """The same for a forward pass of the evaluation after step `step`."""
        largest = self.eval_oom_at.get(step)
        if largest is not None and windows > largest:
            raise torch.OutOfMemoryError(
                f"injected by {FAULTS_ENV}: out of memory in the evaluation after step {step} with {windows} windows")

    def poisons(self, step: int) -> bool:
        return step in self.nan_steps

    def during_checkpoint(self, step: int, file_name: str) -> None:
        """Die half-way through writing checkpoint `step`, as a power cut or kill -9 would."""
        if step in self.kill_in_checkpoint and file_name == "model.safetensors":
            os.kill(os.getpid(), signal.SIGKILL)
