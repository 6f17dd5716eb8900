"""Several processes training one model: data parallel under torchrun.

A process started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set) joins the
process group here: gloo on CPU, nccl on CUDA, each rank on its LOCAL_RANK device. Everything
else keeps to one rule: rank 0 decides and writes, every rank computes. The trainer asks this
module for the few collectives it needs (broadcast a decision, average a loss, the largest
memory, a barrier), and on one process each of them is a plain return, so the loop reads the
same with or without DDP.

Gradients are averaged by engine/train/gradient_sync.py rather than by torch's
DistributedDataParallel, so that a rank that runs out of memory can still take part.

A rank that dies or hangs must not leave the others waiting torch's default 30 minutes: the
process group's timeout is `COLLECTIVE_TIMEOUT_S`, after which a waiting rank fails with a
sentence (and torchrun ends the rest).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----- collectives (plain returns on one process) ---------------------------------------
    def broadcast_ints(self, values: Sequence[int], device: torch.device) -> list[int]:
        """Rank 0's `values` on every rank (the same length everywhere)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.int64, device=device)
        dist.broadcast(tensor, src=0)
        return [int(v) for v in tensor.tolist()]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over ranks (in place, returned for chaining)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_floats(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Each value's largest over ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is True on any rank."""
        return self.max_floats([float(flag)], device)[0] > 0

    def all_true(self, flag: torch.Tensor) -> torch.Tensor:
        """A bool tensor that is True only where it is True on every rank."""
        if not self.enabled:
            return flag
        as_int = flag.to(torch.int32)
        dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
        return as_int.bool()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_environment() -> Distributed:
    """Where torchrun put this process (RANK / WORLD_SIZE / LOCAL_RANK), or a single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))


def start(place: Distributed, device: torch.device) -> None:
    """Join the process group (nothing to do on one process)."""
    if not place.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def finish(place: Distributed) -> None:
    """Leave the process group."""
    if place.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(model: torch.nn.Module, place: Distributed) -> None:
    """Rank 0's weights on every rank, so the ranks start from one model whatever each built
    or loaded (each builds from the same seed, so this is a guard, paid once)."""
    if place.enabled:
        with torch.no_grad():
            for parameter in model.parameters():
                dist.broadcast(parameter.data, src=0)


# What a collective raises when another rank died, hung past the timeout or never joined.
DIST_ERRORS: tuple[type[BaseException], ...] = (dist.DistError,)


def explain(exc: BaseException, place: Distributed) -> str:
    """One sentence for a failed collective: who saw it, what it means, what to do."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return (
        f"rank {place.rank} of {place.world_size} lost the other processes ({detail[:200]}): a rank died, "
        f"hung for more than {COLLECTIVE_TIMEOUT_S:.0f} s or never joined; the last checkpoint is intact and "
        "`lightlm-tui resume RUN_DIR` continues (at any number of processes)."
    )
