"""The steps since the last metrics report, summed on the device and read only when reported.

Reading a loss every step would make a GPU wait for each step to finish; summing on the
device and reading once per report (every `log_interval` steps) keeps it busy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.train.distributed import Distributed
from engine.train.step import StepResult


@dataclass(frozen=True)
class WindowFigures:
    """Means over the reported steps."""

    steps: int  # steps in the window, skipped ones included
    loss: float  # over the applied steps (NaN when every step was skipped)
    ce_loss: float
    grad_norm: float  # of the last step
    finite: bool  # every step's loss and gradients were finite
    # The model's own step figures (StepResult.extra, e.g. per-layer expert loads), averaged
    # over the window's steps, as nested lists of floats.
    extra: dict[str, list] = field(default_factory=dict)


class ReportWindow:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.applied = 0
        self._loss = torch.zeros((), device=self.device)
        self._ce = torch.zeros((), device=self.device)
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._grad_norm: torch.Tensor | None = None
        self._extra: dict[str, torch.Tensor] = {}

    def add(self, result: StepResult) -> None:
        self.steps += 1
        if result.skipped:
            return  # its loss is not finite and it changed nothing: it has no place in the means
        self.applied += 1
        self._loss += result.loss
        self._ce += result.ce_loss
        self._finite &= result.finite
        self._grad_norm = result.grad_norm
        for name, value in result.extra.items():
            self._extra[name] = self._extra[name] + value if name in self._extra else value.detach().clone()

    def take(self, place: Distributed = Distributed()) -> WindowFigures:
        """The window's figures (one device sync; under DDP the losses are averaged over ranks
        and the window is finite only if it was on every rank), and start a new window."""
        steps = self.applied or float("nan")
        grad_norm = self._grad_norm if self._grad_norm is not None else torch.zeros((), device=self.device)
        # Gradients are all-reduced, so the grad norm is the same on every rank already.
        local = torch.stack([self._loss, self._ce, self._finite.to(self._loss.dtype), grad_norm.to(self._loss.dtype)])
        summed = place.sum(local.float()).tolist()
        ranks = place.world_size
        figures = WindowFigures(
            steps=self.steps, loss=summed[0] / ranks / steps, ce_loss=summed[1] / ranks / steps,
            grad_norm=summed[3] / ranks, finite=summed[2] == ranks,
            extra={name: (total / max(1, self.applied)).tolist() for name, total in self._extra.items()},
        )
        self._reset()
        return figures
