"""Which attention implementation a training step uses; shared by the model and the memory estimate.

On CPU in 16-bit precision, explicit attention (two batched matmuls around a softmax, grouped
heads through a view, no repeated KV) measured 1.4-4.5x faster than SDPA's fused CPU kernel at
128-256 tokens, about even at 512 (1.17x for 128 wide, 0.94x for 256 wide) and 1.4-2.2x slower
from 1024 on (bench/attention.py, AMD EPYC with bf16, 2026-11-26). Its numerics are those
of Hugging Face's eager attention under autocast: 16-bit scores, softmax accumulated in fp32,
16-bit probabilities. In fp32, on GPUs, and for longer windows the fused kernels win and are used.
`use_flash = false` asks for no fused kernel at all: training then always takes the explicit path.
"""

from __future__ import annotations

EXPLICIT_ATTENTION_MAX_LEN = 512


def uses_explicit_attention(device_type: str, low_precision: bool, seq_len: int, use_flash: bool = True) -> bool:
    """True when a training forward pass (causal, no KV cache) takes the explicit-matmul path."""
    if not use_flash:
        return True
    return device_type == "cpu" and low_precision and seq_len <= EXPLICIT_ATTENTION_MAX_LEN
