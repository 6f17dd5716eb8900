"""Averaging gradients over DDP ranks in a way that survives one rank running out of memory.

torch's DistributedDataParallel all-reduces gradient buckets while the step's last backward
runs. If one rank runs out of memory before or during that backward, it never issues the
collectives the others are waiting in, and the run hangs until the timeout. Here the same
overlap is kept, with one rule added: every rank issues every bucket's all-reduce, in the
same order, every step, whether its own backward finished or not, and then all ranks say
whether their micro-batches fitted. If one did not, the (meaningless) averaged gradients are
dropped and every rank halves its micro-batch and runs the step again (engine/train/step.py).

How: each trainable parameter's `.grad` is a view into a flat per-bucket buffer that lives for
the whole run (no copy in or out). During the last micro-batch's backward a hook counts the
gradients each bucket still waits for; a bucket whose gradients are all in is all-reduced
asynchronously, strictly in bucket order so every rank's sequence of collectives is the same.
`finish()` issues whatever is left, waits, agrees on the out-of-memory flag and divides by the
number of ranks. Buckets are filled from the last parameter back, the order backward produces
them, so the first all-reduces start early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from engine.train.distributed import Distributed

# A bucket's size: small enough that the first ones go out while backward still has work to
# overlap them with, large enough that the per-collective cost stays small.
BUCKET_BYTES = 1 << 20


@dataclass
class _Bucket:
    flat: torch.Tensor
    params: list[torch.nn.Parameter]
    waiting: int = 0  # gradients of this bucket the current backward has not produced yet
    work: object | None = None  # the async all-reduce in flight


@dataclass
class GradientSync:
    """The gradients of `params`, averaged over the ranks of `place` once per step."""

    params: Sequence[torch.nn.Parameter]
    place: Distributed
    bucket_bytes: int = BUCKET_BYTES
    buckets: list[_Bucket] = field(init=False, default_factory=list)
    next_bucket: int = field(init=False, default=0)  # the next bucket to all-reduce, in order
    armed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        bucket_of: dict[int, _Bucket] = {}
        pending: list[torch.nn.Parameter] = []
        filled = 0  # bytes of the pending bucket
        for param in reversed(list(self.params)):
            if pending and (filled >= self.bucket_bytes
                            or (param.dtype, param.device) != (pending[0].dtype, pending[0].device)):
                self._add_bucket(pending, bucket_of)
                pending, filled = [], 0
            pending.append(param)
            filled += param.numel() * param.element_size()
        if pending:
            self._add_bucket(pending, bucket_of)
        self._bucket_of = bucket_of
        for param in self.params:
            param.register_post_accumulate_grad_hook(self._gradient_ready)

    def _add_bucket(self, params: list[torch.nn.Parameter], bucket_of: dict[int, _Bucket]) -> None:
        flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
        offset = 0
        for param in params:
            # Backward accumulates into an existing .grad in place, so the view stays the gradient.
            param.grad = flat[offset:offset + param.numel()].view_as(param)
            offset += param.numel()
        bucket = _Bucket(flat, params, waiting=len(params))
        for param in params:
            bucket_of[id(param)] = bucket
        self.buckets.append(bucket)

    def zero(self) -> None:
        """Zero every gradient, keeping it a view into its bucket (never set it to None)."""
        for bucket in self.buckets:
            bucket.flat.zero_()

    def arm(self) -> None:
        """The next backward is the step's last: all-reduce buckets as their gradients come in."""
        self.armed = True

    def _gradient_ready(self, param: torch.nn.Parameter) -> None:
        if not self.armed:
            return
        self._bucket_of[id(param)].waiting -= 1
        while self.next_bucket < len(self.buckets) and self.buckets[self.next_bucket].waiting <= 0:
            self._launch(self.next_bucket)

    def _launch(self, index: int) -> None:
        bucket = self.buckets[index]
        bucket.work = dist.all_reduce(bucket.flat, op=dist.ReduceOp.SUM, async_op=True)
        self.next_bucket = index + 1

    def finish(self, failed: bool) -> bool:
        """Complete the step's all-reduces (issuing any this rank has not) and agree on whether
        any rank ran out of memory; returns that. If none did, the gradients are averaged."""
        while self.next_bucket < len(self.buckets):
            self._launch(self.next_bucket)
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.work, bucket.waiting = None, len(bucket.params)
        self.next_bucket, self.armed = 0, False
        any_failed = self.place.any_true(failed, self.buckets[0].flat.device)
        if not any_failed:
            for bucket in self.buckets:
                bucket.flat /= self.place.world_size
        return any_failed
