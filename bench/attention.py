"""Explicit attention against SDPA's fused CPU kernel, forward + backward, by window length.

The model trains through `explicit_causal_attention` (two batched matmuls around a softmax,
grouped heads through a view) on a CPU in 16-bit precision for windows up to
EXPLICIT_ATTENTION_MAX_LEN tokens, and through `F.scaled_dot_product_attention` otherwise
(engine/model/attention_policy.py). This prints, per window, the median time of each path and
their ratio (SDPA time / explicit time: above 1 means explicit is faster), the two interleaved
round by round so the shared machine's drift hits both alike. The CPU it ran on, its bf16
support, torch's version and threads, and the date come first, to be quoted with the figures.

    python bench/attention.py [--dtype bfloat16] [--batch 8] [--rounds 5] [--windows 128,256,512,1024,2048]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from engine.model.attention_policy import EXPLICIT_ATTENTION_MAX_LEN
from engine.model.transformer import explicit_causal_attention
from machine import describe

# (heads, kv heads, head dim): the laptop preset's attention and the 4.9M throughput shape's.
SHAPES = {"laptop 128 wide": (2, 1, 64), "4.9M 256 wide": (8, 2, 32)}


def explicit(q, k, v):
    return explicit_causal_attention(q, k, v, 0.0)


def fused(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def seconds_per_call(attention, q, k, v, grad, repeats: int) -> float:
    """Median seconds of one forward + backward over `repeats` calls (after one warm-up)."""
    times = []
    for index in range(repeats + 1):
        for t in (q, k, v):
            t.grad = None
        started = time.perf_counter()
        attention(q, k, v).backward(grad)
        if index:  # the first call allocates and picks kernels
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--repeats", type=int, default=5, help="calls timed per side per round")
    parser.add_argument("--windows", default="128,256,512,1024,2048")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(describe())
    print(f"{args.dtype}, batch {args.batch}, forward + backward, median of {args.rounds} interleaved rounds "
          f"(each the median of {args.repeats} calls); the model takes the explicit path up to "
          f"{EXPLICIT_ATTENTION_MAX_LEN} tokens in 16-bit on a CPU")
    print(f"{'shape':<18} {'window':>6} {'explicit ms':>12} {'SDPA ms':>9} {'SDPA / explicit':>16}")
    torch.manual_seed(0)
    for name, (heads, kv_heads, head_dim) in SHAPES.items():
        for window in (int(w) for w in args.windows.split(",")):
            q = torch.randn(args.batch, heads, window, head_dim, dtype=dtype, requires_grad=True)
            k = torch.randn(args.batch, kv_heads, window, head_dim, dtype=dtype, requires_grad=True)
            v = torch.randn(args.batch, kv_heads, window, head_dim, dtype=dtype, requires_grad=True)
            grad = torch.randn(args.batch, heads, window, head_dim, dtype=dtype)
            timings: dict[str, list[float]] = {"explicit": [], "sdpa": []}
            for round_index in range(args.rounds):
                # Alternate which side goes first, so neither always runs on a warmer cache.
                order = (("explicit", explicit), ("sdpa", fused))[:: 1 if round_index % 2 == 0 else -1]
                for side, attention in order:
                    timings[side].append(seconds_per_call(attention, q, k, v, grad, args.repeats))
            ours, theirs = statistics.median(timings["explicit"]), statistics.median(timings["sdpa"])
            print(f"{name:<18} {window:>6} {1e3 * ours:>12.2f} {1e3 * theirs:>9.2f} {theirs / ours:>16.2f}")


if __name__ == "__main__":
    main()
