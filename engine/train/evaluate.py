"""Held-out evaluation: loss, bits per byte and perplexity on fixed validation windows."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.data.loader import eval_starts, make_batch
from engine.machine.device import release_cached_memory
from engine.train.faults import OutOfMemoryAtOneWindow, is_out_of_memory
from engine.train.distributed import Distributed


@dataclass(frozen=True)
class EvalFigures:
    val_loss: float
    val_bpb: float
    perplexity: float
    micro_batch_size: int = 0  # windows per forward pass it ended with (halved on out of memory)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    val_tokens: np.ndarray,
    val_bytes_per_token: float,
    seq_len: int,
    batch_size: int,
    batches: int,
    device: torch.device,
    autocast,
    place: Distributed = Distributed(),
    micro_batch_size: int | None = None,
    before_pass: Callable[[int], None] | None = None,
    step: int = 0,
) -> EvalFigures | None:
    """Mean cross-entropy over `batches` x `batch_size` evenly spread windows (the same ones
    every time), in nats; bits per byte divides out the tokenizer so runs with different
    vocabularies compare. None when the split is too short for any window. Under DDP each rank
    evaluates every world_size-th batch and the sums are reduced: every rank gets the figures.
    Each batch runs in passes of at most `micro_batch_size` windows, halved (down to one) when
    memory runs out; the mean is over windows, so how they are split changes nothing. Under
    DDP the ranks agree afterwards: all keep the smallest size any rank needed, and if one rank
    could not fit even one window, all raise `OutOfMemoryAtOneWindow` (none is left waiting).
    `before_pass(windows)` runs before each forward pass (the fault seam)."""
    seq_len = min(seq_len, len(val_tokens) - 1)
    if seq_len < 2:
        return None
    starts = eval_starts(len(val_tokens), seq_len, batches * batch_size)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of window losses, windows)
    size = micro_batch_size or batch_size
    gave_up = False  # out of memory with one window
    try:
        for chunk in np.array_split(starts, batches)[place.rank::place.world_size]:
            done = 0
            while done < len(chunk) and not gave_up:
                part = chunk[done:done + size]
                failed = False
                try:
                    if before_pass is not None:
                        before_pass(len(part))
                    inputs, targets = make_batch(val_tokens, part, seq_len)
                    with autocast():
                        _, _, ce = model(inputs.to(device), targets.to(device))
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    failed = True
                if failed:  # outside the except block, so the failed pass's tensors are gone
                    gc.collect()
                    release_cached_memory(device)
                    gave_up = size == 1
                    size = max(1, size // 2)
                    continue
                total[0] += float(ce) * len(part)
                total[1] += len(part)
                done += len(part)
    finally:
        model.train(was_training)
    # One collective for the agreement: whether any rank gave up, and the smallest size any needed.
    any_gave_up, smallest = place.max_floats([float(gave_up), -size], device)
    if any_gave_up:
        raise OutOfMemoryAtOneWindow(step, "the evaluation after step")
    size = int(-smallest)
    loss_sum, counted = place.sum(total).tolist()
    val_loss = loss_sum / counted
    return EvalFigures(val_loss, val_loss / math.log(2) / val_bytes_per_token, math.exp(min(val_loss, 50.0)), size)
