"""Sizes of a model before building it: parameters, FLOPs per token, training memory.

Pure arithmetic on a ModelConfig (no torch), for the config screen, the planner and the CLI.
The activation terms were derived from what autograd really saves for our model (counted
with saved-tensor hooks; `tests/test_estimates.py` checks them against that count).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.model.attention_policy import uses_explicit_attention
from engine.config import ModelConfig, TrainConfig
from engine.config.finetune import lora_parameter_count
from engine.config.schema import LoraConfig

ADAMW_STATES = 2  # exp_avg and exp_avg_sq, fp32 each
MUON_STATES = 1  # a momentum buffer, fp32


def ffn_experts(config: ModelConfig, active: bool = False) -> int:
    """SwiGLU blocks of ffn_hidden_dims in one layer's feed-forward: 1 when dense; for a
    mixture of experts every routed expert (or, `active`, the k a token uses) plus the shared."""
    if not config.use_moe:
        return 1
    routed = config.moe_active_experts if active else config.moe_num_experts
    return routed + config.moe_shared_experts


def layer_matmul_params(config: ModelConfig, active: bool = False) -> int:
    """Weights of one block's matrices (a MoE router included); `active`: only those one
    token passes through (k of the E routed experts)."""
    c, f = config.num_dims, config.ffn_hidden_dims
    q_out, kv_out = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    router = c * config.moe_num_experts if config.use_moe else 0
    return c * q_out + 2 * c * kv_out + q_out * c + 3 * c * f * ffn_experts(config, active) + router


def parameter_count(config: ModelConfig, active: bool = False) -> int:
    """Trainable parameters, with the tied embedding / output head counted once. `active`:
    the parameters one token uses, which is what a MoE's compute per token follows."""
    norms_per_layer = 2 * config.num_dims
    per_layer = layer_matmul_params(config, active) + norms_per_layer
    return config.vocab_size * config.num_dims + config.num_layers * per_layer + config.num_dims


def active_parameter_count(config: ModelConfig) -> int:
    """Parameters one token passes through (equal to parameter_count for a dense model)."""
    return parameter_count(config, active=True)


def flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Training FLOPs (forward + backward) per token, as in the PaLM paper's MFU formula:
    6 x (matmul weights, the output head included) + 12 x layers x width x seq_len for attention.
    A mixture of experts counts the weights a token uses (k routed experts, the shared, the router)."""
    matmul = config.num_layers * layer_matmul_params(config, active=True) + config.vocab_size * config.num_dims
    attention = 12 * config.num_layers * config.num_dims * seq_len
    return 6 * matmul + attention


def optimizer_bytes(model: ModelConfig, optimizer: str) -> int:
    """The optimizer's state. Muon keeps one buffer per hidden matrix (AdamW keeps two for the
    rest) and, while it steps, a float32 stack of one projection kind's updates across the
    layers plus three bfloat16 working copies of it (engine/train/muon.py)."""
    params = parameter_count(model)
    if optimizer != "muon":
        return 4 * ADAMW_STATES * params
    router = model.num_dims * model.moe_num_experts if model.use_moe else 0  # stays with AdamW
    hidden = model.num_layers * (layer_matmul_params(model) - router)
    c, f = model.num_dims, model.ffn_hidden_dims
    experts = model.moe_num_experts if model.use_moe else 1  # stacked experts: one matrix per expert
    largest_kind = model.num_layers * max(experts * c * f, c * model.num_heads * model.head_dim)
    working = largest_kind * (4 + 3 * 2)
    return 4 * (MUON_STATES * hidden + ADAMW_STATES * (params - hidden)) + working


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs, by kind. `total` excludes the framework's own baseline."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    loss_buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.loss_buffers


def activation_bytes(
    config: ModelConfig,
    batch_size: int,
    seq_len: int,
    low_precision: bool,
    checkpointing: bool,
    device_type: str = "cpu",
) -> int:
    """Bytes autograd keeps from forward for backward, for one micro-batch.

    `low_precision` means bf16/fp16 autocast over fp32 weights: matmul inputs are saved in
    2 bytes, the residual stream and norms stay fp32, and each weight's 2-byte copy is saved
    once per micro-batch. The attention term depends on the path `attention_policy` picks:
    fused kernels keep a log-sum-exp per head, explicit attention its probabilities.
    """
    c, h = config.num_dims, config.num_heads
    # A token's feed-forward activations are those of the experts it runs through (k routed +
    # shared) side by side, so they count as one FFN that many times as wide.
    f = config.ffn_hidden_dims * ffn_experts(config, active=True)
    kv = config.num_kv_heads * config.head_dim
    tokens = batch_size * seq_len
    # MoE dispatch keeps each token's k gathered copies and gate-weighted outputs, and the fp32
    # router scores.
    dispatch = config.moe_active_experts * c * (6 if low_precision else 8) + 8 * config.moe_num_experts \
        if config.use_moe else 0
    explicit = uses_explicit_attention(device_type, low_precision, seq_len, config.use_flash)
    attention = (2 if low_precision else 4) * h * seq_len if explicit else 4 * h
    if low_precision:
        full_layer = tokens * (30 * c + 8 * f + 4 * kv + attention + dispatch) + 2 * layer_matmul_params(config)
        # Cross-entropy keeps the 2-byte logits (engine.model.cross_entropy), not fp32 log-probs.
        head = tokens * (2 * config.vocab_size + 10 * c) + 2 * config.vocab_size * c
    else:
        full_layer = tokens * (4 * (8 * c + 4 * f + 2 * kv) + attention + dispatch)
        head = tokens * 4 * (config.vocab_size + 3 * c)
    if checkpointing:
        # Only each block's input survives; one block is recomputed at a time in backward.
        kept = config.num_layers * tokens * 4 * c
        return kept + full_layer + head
    return config.num_layers * full_layer + head


def training_memory(
    model: ModelConfig, train: TrainConfig, low_precision: bool | None = None, device_type: str = "cpu",
    lora: LoraConfig | None = None,
) -> MemoryEstimate:
    """Memory of one training process: fp32 weights, gradients and optimizer state, the saved
    activations of one micro-batch, and the logits' gradient alive as backward starts. With an
    enabled `lora`, only the adapters have gradients and (AdamW) optimizer state; backward still
    runs through every layer, so the activations stay."""
    if low_precision is None:
        low_precision = train.use_dtype != "float32"
    params = parameter_count(model)
    tokens = train.batch_size * train.max_seq_len
    logit_bytes = 2 if low_precision else 4
    trained, optimizer = params, optimizer_bytes(model, train.optimizer)
    if lora is not None and lora.enabled:
        trained = lora_parameter_count(model, lora.target_modules, lora.rank)
        params, optimizer = params + trained, 4 * ADAMW_STATES * trained
    return MemoryEstimate(
        weights=4 * params,
        gradients=4 * trained,
        optimizer=optimizer,
        activations=activation_bytes(
            model, train.batch_size, train.max_seq_len, low_precision, train.gradient_checkpointing,
            device_type,
        ),
        loss_buffers=tokens * model.vocab_size * logit_bytes,
    )


def memory_shortfall(model: ModelConfig, train: TrainConfig, available_bytes: int, where: str = "RAM",
                     device_type: str = "cpu", lora: LoraConfig | None = None) -> str | None:
    """A sentence when the estimate says training will not fit in `available_bytes` (free RAM,
    or free memory on the GPU), with the figures and what to change; None when it fits.

    Under DDP on one machine every process holds its own copy: the estimate counts them all
    (on a GPU each process has its own device, so one copy is what one device must hold)."""
    estimate = training_memory(model, train, device_type=device_type, lora=lora)
    copies = train.processes if device_type == "cpu" else 1
    needed = estimate.total * copies
    if needed <= available_bytes:
        return None
    mib = 2**20
    fixes = []
    if not train.gradient_checkpointing:
        fixes.append("train.gradient_checkpointing = true")
    if train.batch_size > 1:
        fixes.append("a smaller train.batch_size (the windows per step can stay: raise accumulation_steps)")
    fixes.append("a shorter train.max_seq_len or a smaller model")
    each = f" ({copies} processes x {estimate.total / mib:,.0f} MiB)" if copies > 1 else ""
    return (f"training needs about {needed / mib:,.0f} MiB{each} by the estimate (weights "
            f"{estimate.weights / mib:,.0f}, optimizer {estimate.optimizer / mib:,.0f}, activations "
            f"{estimate.activations / mib:,.0f}) and {available_bytes / mib:,.0f} MiB of {where} is free; "
            f"the run would halve its micro-batch until it fits, or try: {'; '.join(fixes)}.")
