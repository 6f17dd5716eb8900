"""One optimizer step over its micro-batches: the unit training, calibration and benchmarks run.

`TrainStep(model, optimizer, compute, grad_clip, micro_batch_size)(batch, lr)` sets the
learning rate, runs forward and backward on each micro-batch of the step's windows (under
autocast, with loss scaling in float16), unscales, clips, steps the optimizer, runs the
after-step hooks and zeroes the gradients. It returns a `StepResult` whose figures stay on the
device: reading one makes a GPU wait for the step, so the caller reads them only when it
reports. The step knows nothing of the model's insides; a model part that has figures of its
own (expert loads) hands them over through `model.step_figures()`.

Two faults are handled here, where they happen:
- Out of memory in forward or backward: the step frees what it held, halves the micro-batch
  (the windows are the same, split into more micro-batches: the optimizer sees the same
  tokens) and runs again, down to one window; past that it raises `OutOfMemoryAtOneWindow`. Under
  DDP every rank says whether its micro-batches fitted before any gradient is exchanged, and
  if one did not, all of them halve and retry together (so their micro-batches stay equal and
  none waits for a rank that gave up).
- A non-finite loss, or non-finite gradients without a float16 loss scaler (with one,
  overflowing gradients are its business: it skips the update and lowers its scale): the
  optimizer step is skipped and the result says so (`skipped`). Checking costs one read of
  a flag per step (a device sync on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gc

import torch

from engine.data.loader import StepBatch
from engine.machine.device import ComputeSetup, release_cached_memory
from engine.train.distributed import Distributed
from engine.train.gradient_sync import GradientSync
from engine.train.faults import FaultPlan, OutOfMemoryAtOneWindow, is_out_of_memory


@dataclass
class StepResult:
    """What one optimizer step did. Tensors are 0-dim and on the training device."""

    loss: torch.Tensor  # the training loss (cross-entropy plus any auxiliary loss), mean over windows
    ce_loss: torch.Tensor  # the cross-entropy alone
    grad_norm: torch.Tensor  # before clipping
    finite: torch.Tensor  # bool: the loss and every gradient were finite
    windows: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: bool = False  # the update was not applied (non-finite loss or gradients)
    memory_retries: int = 0  # times the micro-batch was halved during this step


class TrainStep:
    """Runs optimizer steps for one model and optimizer (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        compute: ComputeSetup,
        grad_clip: float = 0.0,
        micro_batch_size: int | None = None,
        forward: Callable | None = None,
        faults: FaultPlan | None = None,
        ranks: Distributed | None = None,
    ) -> None:
        """`faults` injects planned faults (tests); `ranks` is this process's place under DDP:
        gradients are averaged over its ranks, and they agree on out-of-memory retries and on
        which steps are skipped."""
        self.model, self.optimizer, self.compute = model, optimizer, compute
        self.forward = forward or model  # e.g. the torch.compile'd model
        self.ranks = ranks or Distributed()
        self.clip = grad_clip if grad_clip > 0 else float("inf")
        self.micro_batch_size = micro_batch_size  # None: the whole step in one micro-batch
        self.faults = faults or FaultPlan()
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Under DDP the gradients live in buckets that are averaged over the ranks.
        self.sync = GradientSync(self.params, self.ranks) if self.ranks.enabled else None
        # float16 needs loss scaling so small gradients do not flush to zero; for bf16 / fp32 the
        # scaler is disabled and every call on it passes straight through.
        self.scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.dtype_name == "float16")
        # Called after each optimizer step, before the gradients are zeroed (e.g. the loss-free
        # MoE bias update reads the step's expert loads).
        self.after_optimizer_step: list[Callable[[], None]] = []
        # A model with a job of its own after each step declares it (loss-free MoE balancing),
        # so training, calibration and benchmarks all run it.
        model_hook = getattr(model, "after_optimizer_step", None)
        if callable(model_hook):
            self.after_optimizer_step.append(model_hook)

    def __call__(self, batch: StepBatch, lr: float) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        retries = 0
        while True:
            failed = False
            try:
                loss_sum, ce_sum = self._forward_backward(batch)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = True
            # Outside the except block, so the failed attempt's frames (and the activations
            # they hold) are gone before memory is freed and the step is tried smaller. Under
            # DDP every rank answers, and all retry if any failed.
            if not (self.sync.finish(failed) if self.sync else failed):
                break
            size = self.micro_batch_size or batch.windows
            self._free_after_out_of_memory()
            if size <= 1:
                raise OutOfMemoryAtOneWindow(batch.step + 1)
            self.micro_batch_size, retries = max(1, size // 2), retries + 1
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
        good = torch.isfinite(loss_sum) & (torch.isfinite(grad_norm) | self.scaler.is_enabled())
        good = self.ranks.all_true(good)  # every rank skips or applies the same steps
        applied = bool(good)
        if applied:
            self.scaler.step(self.optimizer)  # skips the step if float16 overflowed
            for hook in self.after_optimizer_step:
                hook()
        self.scaler.update()
        self._zero_gradients()
        figures = getattr(self.model, "step_figures", None)
        return StepResult(loss_sum, ce_sum, grad_norm.detach(), finite, batch.windows,
                          figures() if figures else {}, skipped=not applied, memory_retries=retries)

    def _forward_backward(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the gradients of every micro-batch; returns the (loss, ce) means."""
        windows = batch.windows
        size = self.micro_batch_size or windows
        loss_sum = torch.zeros((), device=self.compute.device)
        ce_sum = torch.zeros((), device=self.compute.device)
        micro_batches = list(zip(batch.inputs.split(size), batch.targets.split(size)))
        for index, (inputs, targets) in enumerate(micro_batches):
            if self.sync and index == len(micro_batches) - 1:
                self.sync.arm()  # its backward all-reduces gradient buckets as they fill
            self.faults.before_micro_batch(batch.step + 1, size)  # counted as events count: from 1
            # Each micro-batch's mean loss weighs by its share of the step's windows, so the
            # gradient is the mean over all windows however they are split.
            share = inputs.shape[0] / windows
            with self.compute.autocast():
                _, loss, ce = self.forward(inputs, targets)
            if self.faults.poisons(batch.step + 1):
                loss = loss * float("nan")
            self.scaler.scale(loss * share).backward()
            loss_sum += loss.detach() * share
            ce_sum += ce.detach() * share
        return loss_sum, ce_sum

    def _free_after_out_of_memory(self) -> None:
        """Drop the failed attempt's gradients and cached blocks before trying smaller."""
        self._zero_gradients()
        gc.collect()
        release_cached_memory(self.compute.device)

    def _zero_gradients(self) -> None:
        if self.sync:
            self.sync.zero()  # the gradients stay views into the buckets
        else:
            self.optimizer.zero_grad(set_to_none=True)
