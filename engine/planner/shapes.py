"""Sane model shapes for a width and depth: heads, kv heads, feed-forward, vocabulary, window.

Rules (each a `reason` the plan shows):
- head_dim 64 from 128 dims up, 32 below (so a narrow model still has 2+ heads); heads = dims / head_dim;
- kv heads: the largest divisor of the heads up to half of them (grouped-query attention);
- SwiGLU width about 8/3 x dims, rounded up to a multiple of 32;
- depth: dims / layers between 16 and 48 (the 5-minute CPU sweep's winner is 128 x 6, 21);
- vocabulary: 4096 tokens for models up to 192 wide (the sweep: 4096 beat 2048 and 8192 there,
  whose output head costs a small model much of its compute), 8192 up to 512, 16384 above;
- window: 256 tokens below 384 dims (the sweep's), 512 up to 768, 1024 above.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from engine.config import ModelConfig

WIDTHS = (64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1280, 1536, 2048)
MIN_ASPECT, MAX_ASPECT = 16, 48  # dims / layers
MAX_LAYERS = 32


@dataclass(frozen=True)
class Shape:
    dims: int
    layers: int

    @property
    def head_dim(self) -> int:
        return 64 if self.dims >= 128 else 32

    @property
    def heads(self) -> int:
        return max(1, self.dims // self.head_dim)

    @property
    def kv_heads(self) -> int:
        """The largest divisor of the heads up to half of them (1 for one head)."""
        return max(d for d in range(1, max(1, self.heads // 2) + 1) if self.heads % d == 0)

    @property
    def ffn(self) -> int:
        return 32 * math.ceil(8 * self.dims / 3 / 32)

    @property
    def vocab(self) -> int:
        return 4096 if self.dims <= 192 else 8192 if self.dims <= 512 else 16384

    @property
    def seq_len(self) -> int:
        return 256 if self.dims < 384 else 512 if self.dims <= 768 else 1024

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """`base` with this shape (its other settings, e.g. norm and activation, kept)."""
        return dataclasses.replace(
            base, num_dims=self.dims, num_layers=self.layers, num_heads=self.heads, num_kv_heads=self.kv_heads,
            ffn_hidden_dims=self.ffn, vocab_size=self.vocab, context_len=self.seq_len,
        )

    def __str__(self) -> str:
        return f"{self.dims} dims x {self.layers} layers"


def candidate_shapes(widths: tuple[int, ...] = WIDTHS) -> list[Shape]:
    """Every width / depth pair the planner considers, in increasing size."""
    shapes = []
    for dims in widths:
        low = max(2, math.ceil(dims / MAX_ASPECT))
        high = min(MAX_LAYERS, dims // MIN_ASPECT)
        shapes += [Shape(dims, layers) for layers in range(low, high + 1)]
    return shapes
