"""The key/value cache used while generating: one preallocated buffer pair per layer."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every token seen so far, for all layers.

    Buffers are (B, K, max_len, D) and written in place, so a decoding step costs no
    reallocation. Layers call `update` during a forward pass; the model calls `advance`
    once the pass is done, because every layer writes the same positions.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, K, T, D) keys/values; return all of them so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens; {end} were asked for")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        """Mark `num_tokens` more positions as filled (after every layer has written them)."""
        self.length += num_tokens
