"""The block-wise cross-entropy against `F.cross_entropy(logits.float(), ...)`, forward + backward.

engine/model/cross_entropy.py never writes fp32 log-probabilities as large as the logits: each
block of rows is upcast once and the gradient is written straight back in the logits' dtype.
This prints the median time of each on 16-bit logits (default 2048 tokens x 8192 vocab, the
case of docs/benchmarks/cross-entropy-attention.md), and their ratio (F.cross_entropy time /
ours: above 1 means ours is faster), the sides interleaved round by round. It also times ours
with 32 MiB blocks instead of the default 4 MiB (the block size's own measurement, cited in the
module). The CPU it ran on, its bf16 support, torch's version and threads, and the date come
first.

    python bench/cross_entropy.py [--tokens 2048] [--vocab 8192] [--dtype bfloat16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import engine.model.cross_entropy as block_wise
from machine import describe

DEFAULT_BLOCK = block_wise.ELEMENTS_PER_BLOCK
LARGE_BLOCK = 8 << 20  # 32 MiB of fp32


def ours(logits, targets):
    block_wise.ELEMENTS_PER_BLOCK = DEFAULT_BLOCK
    return block_wise.cross_entropy(logits, targets)


def ours_large_blocks(logits, targets):
    block_wise.ELEMENTS_PER_BLOCK = LARGE_BLOCK
    try:
        return block_wise.cross_entropy(logits, targets)
    finally:
        block_wise.ELEMENTS_PER_BLOCK = DEFAULT_BLOCK


def upcast(logits, targets):
    return F.cross_entropy(logits.float(), targets)


SIDES = {"ours (4 MiB blocks)": ours, "ours, 32 MiB blocks": ours_large_blocks, "F.cross_entropy(fp32)": upcast}


def seconds_per_call(loss_fn, logits, targets, repeats: int) -> float:
    """Median seconds of one forward + backward over `repeats` calls (after one warm-up)."""
    times = []
    for index in range(repeats + 1):
        logits.grad = None
        started = time.perf_counter()
        loss_fn(logits, targets).backward()
        if index:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--repeats", type=int, default=5, help="calls timed per side per round")
    args = parser.parse_args()
    print(describe())
    print(f"{args.tokens} x {args.vocab} {args.dtype} logits, forward + backward, median of {args.rounds} "
          f"interleaved rounds (each the median of {args.repeats} calls)")
    torch.manual_seed(0)
    logits = torch.randn(args.tokens, args.vocab, dtype=getattr(torch, args.dtype), requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.tokens,))
    timings: dict[str, list[float]] = {name: [] for name in SIDES}
    for round_index in range(args.rounds):
        order = list(SIDES.items())[:: 1 if round_index % 2 == 0 else -1]
        for name, loss_fn in order:
            timings[name].append(seconds_per_call(loss_fn, logits, targets, args.repeats))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    reference = medians["F.cross_entropy(fp32)"]
    for name, seconds in medians.items():
        print(f"{name:<24} {1e3 * seconds:>8.2f} ms   F.cross_entropy(fp32) / this: {reference / seconds:.2f}")
    print(f"32 MiB blocks / 4 MiB blocks (time): {medians['ours, 32 MiB blocks'] / medians['ours (4 MiB blocks)']:.2f}")


if __name__ == "__main__":
    main()
