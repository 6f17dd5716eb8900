"""How our model maps onto Hugging Face models: config fields and weight names.

A dense model is `LlamaForCausalLM`. A mixture-of-experts model keeps Llama's attention and
norms and takes the Hugging Face MoE whose router computes exactly ours:
- softmax routing (the auxiliary loss), no shared experts: `MixtralForCausalLM` (softmax over
  the router logits, top-k, renormalised; experts stacked as gate_up_proj [E, 2F, C] with the
  gate half first, and down_proj [E, C, F]);
- loss-free routing: `Glm4MoeForCausalLM`, whose router is DeepSeek-V3's: float32 sigmoid
  scores, the score-correction bias (our expert_bias) added only to choose, gates from the
  unbiased scores normalised over the chosen experts; with one expert group, a routed scaling
  factor of 1, full-width rotary, no q/k norm, no dense first layers and no attention bias it
  is our block exactly, shared experts included (one SwiGLU of S x F, as ours).
Softmax routing with shared experts has no exact Hugging Face twin with this attention, so it
is refused (see `hf_incompatibilities`).

Kept free of `transformers` imports: callers that build the HF model import it themselves.
"""

from __future__ import annotations

from typing import Any

from engine.config import ModelConfig

HF_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
HF_PREFIX = "model."


LLAMA, MIXTRAL, GLM4_MOE = "LlamaForCausalLM", "MixtralForCausalLM", "Glm4MoeForCausalLM"
HF_CONFIG_CLASSES = {LLAMA: "LlamaConfig", MIXTRAL: "MixtralConfig", GLM4_MOE: "Glm4MoeConfig"}


def hf_architecture(config: ModelConfig) -> str:
    """The Hugging Face model class that computes what `config` does (see the module docstring)."""
    if not config.use_moe:
        return LLAMA
    return GLM4_MOE if config.use_lossfreebalance else MIXTRAL


def hf_incompatibilities(config: ModelConfig) -> list[str]:
    """Why `config` cannot be exported exactly (empty when it can); each reason says what to
    choose instead."""
    reasons = []
    if config.norm_type != "rmsnorm":
        reasons.append(f"norm_type {config.norm_type!r}: the Hugging Face models use rmsnorm")
    if config.use_moe and not config.use_lossfreebalance and config.moe_shared_experts:
        reasons.append(
            "softmax routing (the auxiliary-loss balancing) with shared experts has no exact Hugging Face "
            "twin: Mixtral has no shared experts, and the models with shared experts route with sigmoid "
            "scores (Glm4Moe, DeepSeek-V3), gate their shared expert (Qwen2-MoE) or use another attention; "
            "train with moe_shared_experts = 0 (exported as Mixtral) or use_lossfreebalance = true "
            "(exported as Glm4Moe)"
        )
    if config.use_moe and config.use_lossfreebalance and config.moe_num_experts < 2:
        reasons.append("loss-free routing with one expert: Glm4Moe's router needs at least 2 experts")
    return reasons


def hf_config_kwargs(config: ModelConfig) -> tuple[str, dict[str, Any]]:
    """The transformers config class name and its keyword arguments for `config`."""
    architecture = hf_architecture(config)
    kwargs = llama_config_kwargs(config)
    if architecture == LLAMA:
        return HF_CONFIG_CLASSES[LLAMA], kwargs
    for llama_only in ("mlp_bias",):
        kwargs.pop(llama_only)
    moe = {"num_experts_per_tok": config.moe_active_experts, "output_router_logits": False}
    if architecture == MIXTRAL:
        kwargs.pop("attention_bias")
        moe.update(num_local_experts=config.moe_num_experts, router_jitter_noise=0.0, sliding_window=None,
                   router_aux_loss_coef=config.moe_aux_loss_coef)
    else:
        kwargs["rope_parameters"] = {**kwargs["rope_parameters"], "partial_rotary_factor": 1.0}
        moe.update(
            n_routed_experts=config.moe_num_experts, n_shared_experts=config.moe_shared_experts,
            moe_intermediate_size=config.ffn_hidden_dims, routed_scaling_factor=1.0, n_group=1, topk_group=1,
            first_k_dense_replace=0, norm_topk_prob=True, use_qk_norm=False, num_mtp_layers=0,
        )
    return HF_CONFIG_CLASSES[architecture], {**kwargs, **moe}


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


# Our MoE names -> the Hugging Face MoE's (after the `model.` prefix); the stacked gate and up
# projections become one gate_up_proj, gate half first.
MOE_RENAMES = {".mlp.router.weight": ".mlp.gate.weight", ".mlp.expert_bias": ".mlp.gate.e_score_correction_bias"}


def to_hf_state_dict(state_dict: dict[str, Any], config: ModelConfig | None = None) -> dict[str, Any]:
    """Our parameter names -> the Hugging Face model's (the tied head is left to the HF model).
    With a loss-free MoE `config` without shared experts, Glm4Moe's zero-width shared experts
    are written as the empty tensors they are."""
    import torch

    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(".mlp.experts.up_proj"):
            continue  # joined with gate_proj below
        if name.endswith(".mlp.experts.gate_proj"):
            up = state_dict[name.removesuffix("gate_proj") + "up_proj"]
            out[HF_PREFIX + name.removesuffix("gate_proj") + "gate_up_proj"] = torch.cat((tensor, up), dim=1)
            continue
        for ours, theirs in MOE_RENAMES.items():
            if name.endswith(ours):
                name = name.removesuffix(ours) + theirs
        out[HF_PREFIX + name] = tensor
    if config is not None and config.use_moe and config.use_lossfreebalance and not config.moe_shared_experts:
        c = config.num_dims
        for layer in range(config.num_layers):
            shared = f"{HF_PREFIX}layers.{layer}.mlp.shared_experts."
            out[shared + "gate_proj.weight"] = torch.zeros(0, c)
            out[shared + "up_proj.weight"] = torch.zeros(0, c)
            out[shared + "down_proj.weight"] = torch.zeros(c, 0)
    return out


def from_hf_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face model's parameter names -> ours (drops `lm_head.weight`, which is tied,
    and Glm4Moe's empty shared experts)."""
    out = {}
    for name, tensor in state_dict.items():
        if not name.startswith(HF_PREFIX) or (".shared_experts." in name and tensor.numel() == 0):
            continue
        name = name.removeprefix(HF_PREFIX)
        if name.endswith(".mlp.experts.gate_up_proj"):
            gate, up = tensor.chunk(2, dim=1)
            stem = name.removesuffix("gate_up_proj")
            out[stem + "gate_proj"], out[stem + "up_proj"] = gate, up
            continue
        for ours, theirs in MOE_RENAMES.items():
            if name.endswith(theirs):
                name = name.removesuffix(theirs) + ours
        out[name] = tensor
    return out
