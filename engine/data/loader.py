"""Training batches: random windows of max_seq_len + 1 tokens, split into inputs and shifted targets.

The windows of optimizer step k are a pure function of (seed, k): one list of
`windows_per_step` start offsets for the whole global batch. Micro-batches (and, under DDP,
ranks) take contiguous slices of that list, so the micro-batch size and the number of
processes are execution details: `8 x 1`, `4 x 2` and `2 x 4` train on the same windows at
every step, an out-of-memory retry with a halved micro-batch sees the same data, and a run
resumed at step k draws exactly the windows the uninterrupted run would have.

Checkpoints record the order they were trained with (`DATA_ORDER_VERSION` in state.json).
Version 1 (before 2026-11-26) drew each micro-batch from its own generator seeded with
(seed, step, micro, rank); `step_window_starts` still produces it, so an old run resumes
exactly (with the micro-batch size it was trained with).

No padding: every position of every window is a real token. A background thread keeps a
bounded queue of ready batches so the trainer never waits on numpy; the time it does wait is
recorded (`wait_s`) so a benchmark can prove that.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

DATA_ORDER_VERSION = 2


@dataclass
class StepBatch:
    """The windows one optimizer step trains on (this rank's share of them): inputs (N, T) and
    targets (N, T), targets[:, t] = the token after inputs[:, t]."""

    step: int
    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def windows(self) -> int:
        return self.inputs.shape[0]


def _check_length(num_tokens: int, seq_len: int) -> None:
    if num_tokens < seq_len + 1:
        raise ValueError(
            f"the training split has {num_tokens} tokens, fewer than one window of max_seq_len + 1 = "
            f"{seq_len + 1}; use more text or a smaller train.max_seq_len"
        )


def step_window_starts(
    seed: int, step: int, windows: int, num_tokens: int, seq_len: int,
    order_version: int = DATA_ORDER_VERSION, micro_batch_size: int | None = None,
) -> np.ndarray:
    """Start offsets of every window of optimizer `step`; depends on nothing but its arguments.

    `micro_batch_size` matters only for order version 1, whose windows were drawn per micro-batch."""
    _check_length(num_tokens, seq_len)
    high = num_tokens - seq_len
    if order_version == 1:
        size = micro_batch_size or windows
        parts = [np.random.default_rng([seed, step, micro, 0]).integers(0, high, size=size)
                 for micro in range(windows // size)]
        return np.concatenate(parts)
    if order_version != DATA_ORDER_VERSION:
        raise ValueError(f"unknown data order version {order_version}; this version knows 1 and {DATA_ORDER_VERSION}")
    return np.random.default_rng([seed, step]).integers(0, high, size=windows)


def rank_slice(windows: int, rank: int, world_size: int) -> slice:
    """The contiguous share of a step's windows that `rank` of `world_size` trains on."""
    if windows % world_size:
        raise ValueError(f"{windows} windows per step do not split evenly over {world_size} processes")
    share = windows // world_size
    return slice(rank * share, (rank + 1) * share)


def make_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and shifted targets (int64) for windows starting at `starts`."""
    windows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    block = torch.from_numpy(windows)
    return block[:, :-1], block[:, 1:]


class BatchLoader:
    """Background producer of the StepBatch of steps start_step, start_step + 1, ...

    Iterate to get one StepBatch per optimizer step (`windows_per_step` windows for the whole
    global batch, of which this rank gets its slice); `close()` stops the thread. On CUDA,
    batches are pinned and copied without blocking.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        windows_per_step: int,
        seq_len: int,
        seed: int,
        start_step: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
        order_version: int = DATA_ORDER_VERSION,
        micro_batch_size: int | None = None,
    ) -> None:
        self.tokens, self.windows_per_step, self.seq_len, self.seed = tokens, windows_per_step, seq_len, seed
        self.order_version, self.micro_batch_size = order_version, micro_batch_size
        self.share = rank_slice(windows_per_step, rank, world_size)
        self.device = torch.device(device)
        _check_length(len(tokens), seq_len)  # fail now, in the caller, if too short
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._next_step = start_step
        self.wait_s = 0.0  # time the consumer spent waiting on an empty queue
        self._thread = threading.Thread(target=self._produce, name="lightlm-batches", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        step = self._next_step
        pin = self.device.type == "cuda"
        try:
            while not self._stop.is_set():
                starts = step_window_starts(self.seed, step, self.windows_per_step, len(self.tokens), self.seq_len,
                                            self.order_version, self.micro_batch_size)[self.share]
                inputs, targets = make_batch(self.tokens, starts, self.seq_len)
                if pin:
                    inputs, targets = inputs.pin_memory(), targets.pin_memory()
                item = StepBatch(step, inputs, targets)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                step += 1
        except BaseException as exc:  # surface producer errors in the consumer
            self._queue.put(exc)

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> StepBatch:
        start = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - start
        if isinstance(item, BaseException):
            raise item
        if self.device.type != "cpu":
            non_blocking = self.device.type == "cuda"
            item.inputs = item.inputs.to(self.device, non_blocking=non_blocking)
            item.targets = item.targets.to(self.device, non_blocking=non_blocking)
        return item

    def close(self) -> None:
        """Stop the producer thread and wait for it."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def eval_starts(num_tokens: int, seq_len: int, count: int) -> np.ndarray:
    """Fixed, evenly spread window starts over the held-out split, the same at every evaluation."""
    if num_tokens < seq_len + 1:
        raise ValueError(
            f"the validation split has {num_tokens} tokens, fewer than one window of {seq_len + 1}; "
            "raise data.val_fraction or lower train.max_seq_len"
        )
    return np.linspace(0, num_tokens - seq_len - 1, count).astype(np.int64)
