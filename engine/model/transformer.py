"""A Llama-style decoder-only transformer, readable top to bottom.

Shapes: B batch, T time (tokens), C num_dims, H num_heads, K num_kv_heads, D head_dim, V vocab.

Parameter names and the rotary convention (rotate-half, HF's `inv_freq`) are Hugging Face
Llama's, so `engine.model.hf_compat` maps a state dict onto `LlamaForCausalLM` by adding a prefix,
and the two models produce the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.model.attention_policy import uses_explicit_attention
from engine.config import ModelConfig
from engine.model.cross_entropy import IGNORE_INDEX, cross_entropy  # noqa: F401 (IGNORE_INDEX re-exported)
from engine.model.kv_cache import KVCache
from engine.model.layers import ADAPTERS, EMBEDDINGS, HIDDEN_MATRICES, NORMS, ROUTERS, FeedForward, build_norm
from engine.model.moe import build_moe, load_figures, summed_over_ranks
from engine.model.sampling import sample_next_token

class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embeddings, precomputed up to context_len."""

    def __init__(self, head_dim: int, context_len: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        freqs = torch.arange(context_len, dtype=torch.float)[:, None] * inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)  # (context_len, D), HF's layout
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions start .. start+length-1, each (length, D) in `dtype`."""
        end = start + length
        return self.cos[start:end].to(dtype), self.sin[start:end].to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, D) queries or keys by their positions."""
    return x * cos + rotate_half(x) * sin


def explicit_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v, with each KV head's query group batched together
    through a view (no repeated K/V). q (B, H, T, D); k, v (B, K, T, D) -> (B, H, T, D)."""
    b, h, t, d = q.shape
    kv_heads = k.shape[1]
    groups = h // kv_heads
    grouped_q = q.reshape(b * kv_heads, groups * t, d)  # (B*K, G*T, D)
    # The causal mask enters as an additive -inf bias inside the matmul (baddbmm), which costs
    # no separate pass in forward and nothing at all in backward.
    future = torch.full((t, t), float("-inf"), dtype=q.dtype, device=q.device).triu(diagonal=1)
    bias = future.repeat(groups, 1).expand(b * kv_heads, groups * t, t)
    scores = torch.baddbmm(bias, grouped_q, k.reshape(b * kv_heads, t, d).transpose(1, 2), alpha=d**-0.5)
    probs = scores.view(b * kv_heads, groups, t, t).softmax(dim=-1)
    if dropout:
        probs = F.dropout(probs, p=dropout)
    out = torch.bmm(probs.view(b * kv_heads, groups * t, t), v.reshape(b * kv_heads, t, d))
    return out.view(b, h, t, d)


class Attention(nn.Module):
    """Grouped-query causal self-attention through scaled_dot_product_attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        c, d = config.num_dims, config.head_dim
        self.q_proj = nn.Linear(c, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(c, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(c, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, c, bias=False)
        self.dropout = config.dropout
        self.use_flash = config.use_flash

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(layer, k, v)  # now (B, K, past + T, D)
        mask, causal = None, t > 1
        if past and t > 1:
            # New tokens see every cached one and the new ones up to themselves.
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        y = self._attend(q, k, v, mask, causal)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def _attend(self, q, k, v, mask, causal) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        gqa = self.num_heads != self.num_kv_heads
        low_precision = q.dtype in (torch.bfloat16, torch.float16)
        if causal and mask is None and uses_explicit_attention(q.device.type, low_precision, q.shape[2],
                                                               self.use_flash):
            return explicit_causal_attention(q, k, v, dropout)
        if self.use_flash:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, enable_gqa=gqa
            )
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, enable_gqa=gqa
            )


def build_feed_forward(config: ModelConfig) -> nn.Module:
    """The block's feed-forward: the one seam where a mixture-of-experts layer plugs in.

    Any module returning (output, aux_loss or None) from forward(x) fits.
    """
    if config.use_moe:
        return build_moe(config)
    return FeedForward(config)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.input_layernorm = build_norm(config)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = build_norm(config)
        self.mlp = build_feed_forward(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None):
        x = x + self.resid_dropout(self.self_attn(self.input_layernorm(x), cos, sin, cache, self.index))
        out, aux = self.mlp(self.post_attention_layernorm(x))
        return x + self.resid_dropout(out), aux


class Transformer(nn.Module):
    """The language model. `forward(idx, targets)` -> (logits, loss, ce_loss)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.num_dims)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = build_norm(config)
        self.rotary = RotaryEmbedding(config.head_dim, config.context_len, config.rope_theta)
        self.gradient_checkpointing = False
        self._step_counts: torch.Tensor | None = None  # MoE loads of the last optimizer step (L, E)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), with the projections that write into the residual
        stream scaled by 1/sqrt(2 * num_layers) so its variance does not grow with depth."""
        residual_std = 0.02 / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                nn.init.ones_(module.weight)
            elif hasattr(module, "init_weights"):  # stacked expert weights: the same init as Linear's
                module.init_weights(std=0.02, residual_std=residual_std)

    def moe_layers(self) -> list[nn.Module]:
        """The blocks' mixture-of-experts feed-forwards (empty for a dense model)."""
        return [layer.mlp for layer in self.layers if hasattr(layer.mlp, "take_counts")]

    def num_active_parameters(self) -> int:
        """Parameters one token passes through: the routed experts count k of E."""
        total = self.num_parameters()
        for moe in self.moe_layers():
            per_expert = sum(p[0].numel() for p in (moe.experts.gate_proj, moe.experts.up_proj, moe.experts.down_proj))
            total -= (moe.num_experts - moe.top_k) * per_expert
        return total

    def after_optimizer_step(self) -> None:
        """After each optimizer step: take every MoE layer's expert loads of the step (all its
        micro-batches; summed over ranks under DDP, in one collective) and, for loss-free
        balancing, move each layer's routing bias by them."""
        layers = self.moe_layers()
        if not layers:
            return
        self._step_counts = summed_over_ranks(torch.stack([moe.take_counts() for moe in layers]))
        for moe, counts in zip(layers, self._step_counts):
            if moe.loss_free:
                moe.update_bias(counts)

    def step_figures(self) -> dict[str, torch.Tensor]:
        """The last optimizer step's per-layer expert loads, (L, E) fractions and (L,)
        max-violation, on the device; empty for a dense model."""
        layers = self.moe_layers()
        if not layers:
            return {}
        counts = getattr(self, "_step_counts", None)
        if counts is None:  # no step hook ran (a caller stepping by hand): this process's counts
            counts = torch.stack([moe.take_counts() for moe in layers])
        self._step_counts = None
        return load_figures(counts)

    def num_parameters(self) -> int:
        """All parameters, frozen ones included (the tied output head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def num_trainable_parameters(self) -> int:
        """Parameters the optimizer updates (only the adapters of a LoRA run)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter under the kind the optimizer treats it as, each exactly once:
        `hidden_matrices` (the blocks' linear weights: decayed, Muon's), `embeddings` (the
        token embedding, also the tied output head: decayed, never Muon's), `norms`
        (no decay), `routers` (MoE routers: no decay, never Muon's; the stacked expert
        weights are hidden matrices) and `adapters` (LoRA's A and B: no decay, never Muon's).
        Declared here, by the modules that own them, so the optimizer never guesses a
        parameter's role from its name or shape."""
        groups: dict[str, list[nn.Parameter]] = {
            HIDDEN_MATRICES: [], EMBEDDINGS: [self.embed_tokens.weight], NORMS: [], ROUTERS: [], ADAPTERS: [],
        }
        for module in self.modules():
            if hasattr(module, "parameter_kinds"):  # a module with parameters of its own (MoE, LoRA)
                for kind, params in module.parameter_kinds().items():
                    groups[kind].extend(params)
            elif isinstance(module, nn.Linear):
                groups[HIDDEN_MATRICES].append(module.weight)
            elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                groups[NORMS].append(module.weight)
        return groups

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None):
        """Final-norm hidden states (B, T, C) and the summed auxiliary loss (or None)."""
        t = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + t > self.config.context_len:
            raise ValueError(
                f"sequence of {start + t} tokens is longer than context_len ({self.config.context_len})"
            )
        x = self.embed_tokens(idx)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        cos, sin = self.rotary(start, t, dtype)
        aux_total = None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and cache is None:
                x, aux = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x, aux = layer(x, cos, sin, cache)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
        if cache is not None:
            cache.advance(t)
        return self.norm(x), aux_total

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, V); with targets (already shifted: targets[:, t] follows idx[:, t]),
        also the training loss and the plain cross-entropy (equal unless an aux loss exists).
        Target positions equal to -100 are ignored."""
        h, aux = self.hidden_states(idx)
        logits = F.linear(h, self.embed_tokens.weight)  # tied output head
        if targets is None:
            return logits, None, None
        ce_loss = cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        loss = ce_loss if aux is None else ce_loss + aux
        return logits, loss, ce_loss

    def new_cache(self, batch_size: int, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache sized for context_len tokens."""
        weight = self.embed_tokens.weight
        return KVCache(
            num_layers=self.config.num_layers,
            batch_size=batch_size,
            num_kv_heads=self.config.num_kv_heads,
            max_len=self.config.context_len,
            head_dim=self.config.head_dim,
            dtype=dtype or weight.dtype,
            device=weight.device,
        )

    def _next_logits(self, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        h, _ = self.hidden_states(idx, cache)
        return F.linear(h[:, -1, :], self.embed_tokens.weight).float()

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        seed: int | None = None,
        use_cache: bool | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Continue each row of `idx` (B, T) by up to `max_new_tokens` tokens; returns (B, T + n).

        temperature 0 is greedy. Sampling draws from a generator seeded with `seed`, so the same
        seed gives the same text with or without the KV cache. Generation stops early once
        every row has produced `eos_id`. Past context_len the oldest tokens are dropped.
        `on_token` is called with each new (B,) token tensor as it is chosen (for streaming).
        """
        was_training = self.training
        self.eval()
        use_cache = self.config.use_cache if use_cache is None else use_cache
        generator = torch.Generator(device=idx.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        ctx = self.config.context_len
        cache = self.new_cache(idx.shape[0]) if use_cache and idx.shape[1] < ctx else None
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        pending = idx  # tokens the model has not seen yet
        try:
            for _ in range(max_new_tokens):
                if cache is not None and cache.length + pending.shape[1] <= ctx:
                    logits = self._next_logits(pending, cache)
                else:
                    # No cache, or the window slid past context_len: positions shift, so every
                    # remaining step recomputes the last `ctx` tokens (exactly as uncached).
                    cache = None
                    logits = self._next_logits(idx[:, -ctx:], None)
                token = sample_next_token(logits, temperature, top_k, top_p, generator)
                if eos_id is not None:
                    token = torch.where(finished, torch.full_like(token, eos_id), token)
                    finished |= token == eos_id
                idx = torch.cat((idx, token[:, None]), dim=1)
                pending = token[:, None]
                if on_token is not None:
                    on_token(token)
                if eos_id is not None and bool(finished.all()):
                    break
        finally:
            self.train(was_training)
        return idx
