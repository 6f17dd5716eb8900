"""Training batches: random windows of max_seq_len + 1 tokens, split into inputs and shifted targets.

The windows of optimizer step k (all its micro-batches, on every rank) are a pure function
of (seed, k, micro-batch, rank): a run resumed at step k draws exactly the batches the
uninterrupted run would have. No padding: every position of every window is a real token.
A background thread keeps a bounded queue of ready batches so the trainer never waits on
numpy; the time it does wait is recorded (`wait_s`) so a benchmark can prove that.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    """One micro-batch: inputs (B, T) and targets (B, T), targets[:, t] = the token after inputs[:, t]."""

    step: int
    micro: int
    inputs: torch.Tensor
    targets: torch.Tensor


def window_starts(
    seed: int, step: int, micro: int, batch_size: int, num_tokens: int, seq_len: int, rank: int = 0
) -> np.ndarray:
    """Start offsets of the windows of one micro-batch; depends on nothing but its arguments."""
    if num_tokens < seq_len + 1:
        raise ValueError(
            f"the training split has {num_tokens} tokens, fewer than one window of max_seq_len + 1 = "
            f"{seq_len + 1}; use more text or a smaller train.max_seq_len"
        )
    rng = np.random.default_rng([seed, step, micro, rank])
    return rng.integers(0, num_tokens - seq_len, size=batch_size)


def make_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and shifted targets (int64) for windows starting at `starts`."""
    windows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    block = torch.from_numpy(windows)
    return block[:, :-1], block[:, 1:]


class BatchLoader:
    """Background producer of the micro-batches of steps start_step, start_step + 1, ...

    Iterate to get Batch objects in order (accumulation_steps per optimizer step); `close()`
    stops the thread. On CUDA, batches are pinned and copied without blocking.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_len: int,
        accumulation_steps: int,
        seed: int,
        start_step: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        prefetch: int = 4,
    ) -> None:
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.accumulation_steps, self.seed, self.rank = accumulation_steps, seed, rank
        self.device = torch.device(device)
        window_starts(seed, 0, 0, 1, len(tokens), seq_len)  # fail now, in the caller, if too short
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
                for micro in range(self.accumulation_steps):
                    starts = window_starts(self.seed, step, micro, self.batch_size, len(self.tokens),
                                           self.seq_len, self.rank)
                    inputs, targets = make_batch(self.tokens, starts, self.seq_len)
                    if pin:
                        inputs, targets = inputs.pin_memory(), targets.pin_memory()
                    item = Batch(step, micro, inputs, targets)
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

    def __next__(self) -> Batch:
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
