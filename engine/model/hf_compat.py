"""How our model maps onto Hugging Face `LlamaForCausalLM`: config fields and weight names.

Kept free of `transformers` imports: callers that build the HF model import it themselves.
"""

from __future__ import annotations

from typing import Any

from engine.config import ModelConfig

HF_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
HF_PREFIX = "model."


def hf_incompatibilities(config: ModelConfig) -> list[str]:
    """Why `config` cannot be expressed as a Llama model (empty when it can)."""
    reasons = []
    if config.norm_type != "rmsnorm":
        reasons.append(f"norm_type {config.norm_type!r}: Llama uses rmsnorm")
    if config.use_moe:
        reasons.append("use_moe: Llama has a dense feed-forward")
    return reasons


def llama_config_kwargs(config: ModelConfig) -> dict[str, Any]:
    """Keyword arguments for `transformers.LlamaConfig` describing the same network."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.num_dims,
        "intermediate_size": config.ffn_hidden_dims,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_len,
        "rms_norm_eps": config.rmsnorm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": HF_ACTIVATIONS[config.activation_fn],
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
    }


def to_hf_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Our parameter names -> LlamaForCausalLM's (the tied head is left to the HF model)."""
    return {HF_PREFIX + name: tensor for name, tensor in state_dict.items()}


def from_hf_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """LlamaForCausalLM's parameter names -> ours (drops `lm_head.weight`, which is tied)."""
    return {
        name.removeprefix(HF_PREFIX): tensor
        for name, tensor in state_dict.items()
        if name.startswith(HF_PREFIX)
    }
