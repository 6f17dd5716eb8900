"""The run configuration: what a run is made of, as plain dataclasses.

Every field carries its own help sentence and simple constraints in `metadata`, so the
validator, the TOML loader, the docs' config reference and the UI's settings table all
read one source of truth. Cross-field rules live in `validate.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "muon")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
NORM_TYPES = ("rmsnorm", "layernorm")
EMBEDDED_CORPORA = ("python-stdlib", "python-docs")
BUILTIN_TOKENIZERS = ("bpe", "bytes")


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    choices: tuple[str, ...] | None = None,
    zero_means: str | None = None,
) -> Any:
    """A dataclass field with the metadata the validator and the UI read.

    `min`/`max` bound numbers (inclusive unless `min_exclusive`); `choices` lists the allowed
    strings; `zero_means` documents what 0 switches off ("0 = off") and exempts 0 from `min`.
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "choices": choices,
        "zero_means": zero_means,
    }
    if isinstance(default, (list, dict)):
        frozen = tuple(default)
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """The transformer's shape. Names follow upstream LightLM so its configs read the same."""

    vocab_size: int = setting(8192, "Tokens in the vocabulary; follows the tokenizer.", min=2)
    num_dims: int = setting(256, "Width of the residual stream (hidden size).", min=1)
    num_heads: int = setting(8, "Attention (query) heads; must divide num_dims.", min=1)
    num_kv_heads: int = setting(
        4, "Key/value heads for grouped-query attention; must divide num_heads.", min=1
    )
    num_layers: int = setting(4, "Transformer blocks.", min=1)
    ffn_hidden_dims: int = setting(
        768, "Hidden width of the feed-forward (about 8/3 x num_dims for SwiGLU).", min=1
    )
    context_len: int = setting(
        512, "Longest sequence the model is built for (RoPE positions, KV cache size).", min=1
    )
    use_cache: bool = setting(True, "Use the KV cache when generating text.")
    use_flash: bool = setting(
        True, "Let attention use fused (flash / memory-efficient) kernels where the hardware has them."
    )
    use_moe: bool = setting(False, "Mixture-of-experts feed-forward instead of a dense one.")
    moe_num_experts: int = setting(4, "Routed experts per MoE layer.", min=1)
    moe_active_experts: int = setting(1, "Experts each token is routed to (top-k).", min=1)
    moe_shared_experts: int = setting(0, "Experts every token always uses.", min=0)
    moe_aux_loss_coef: float = setting(
        0.01, "Weight of the Switch-style load-balancing loss.", min=0.0
    )
    use_lossfreebalance: bool = setting(
        False, "Balance experts with a routing bias (DeepSeek style) instead of an auxiliary loss."
    )
    moe_bias_update_rate: float = setting(
        0.001, "Step size of the loss-free balancing bias update.", min=0.0
    )
    rmsnorm_eps: float = setting(1e-5, "Epsilon inside the normalisation layers.", min=0.0, min_exclusive=True)
    rope_theta: float = setting(10000.0, "RoPE base frequency.", min=0.0, min_exclusive=True)
    activation_fn: str = setting("silu", "Gate activation of the gated feed-forward.", choices=ACTIVATIONS)
    norm_type: str = setting("rmsnorm", "Normalisation layer.", choices=NORM_TYPES)
    dropout: float = setting(0.0, "Dropout on attention weights and residual branches.", min=0.0, max=0.99)

    @property
    def head_dim(self) -> int:
        """Width of one attention head (num_dims / num_heads, floored when they do not divide)."""
        return self.num_dims // self.num_heads if self.num_heads > 0 else 0


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained: optimisation, precision, schedule, checkpoints."""

    num_epochs: int = setting(1, "Passes over the training tokens (used when max_steps is 0).", min=1)
    max_steps: int = setting(0, "Optimizer steps to run.", min=1, zero_means="run num_epochs")
    time_budget_s: float = setting(
        0.0, "Wall-clock budget in seconds; the schedule follows time.", min=0.0,
        min_exclusive=True, zero_means="no budget",
    )
    seed: int = setting(1337, "Seed for weights, data order and sampling.", min=0)
    max_seq_len: int = setting(256, "Tokens per training window; at most model.context_len.", min=1)
    batch_size: int = setting(8, "Windows per micro-batch.", min=1)
    accumulation_steps: int = setting(1, "Micro-batches per optimizer step.", min=1)
    learning_rate: float = setting(1e-3, "Peak learning rate.", min=0.0, min_exclusive=True)
    min_lr_ratio: float = setting(
        0.1, "Final learning rate as a fraction of the peak (cosine decay).", min=0.0, max=1.0
    )
    warmup_ratio: float = setting(0.05, "Fraction of the run spent warming the learning rate up.", min=0.0, max=1.0)
    optimizer: str = setting(
        "adamw", "muon orthogonalises the hidden matrices' updates (AdamW keeps embeddings and norms).",
        choices=OPTIMIZERS,
    )
    weight_decay: float = setting(0.1, "Decoupled weight decay (matrices only).", min=0.0)
    betas: tuple[float, float] = setting(
        [0.9, 0.95], "AdamW betas (beta1, beta2), each in [0, 1); with muon, for embeddings and norms."
    )
    grad_clip: float = setting(1.0, "Clip the global gradient norm to this value.", min=0.0, zero_means="no clipping")
    use_dtype: str = setting(
        "auto", "Compute precision; auto picks bfloat16 where supported, else float32.", choices=DTYPES
    )
    use_compile: bool = setting(False, "torch.compile the model (costs start-up time, pays on long runs).")
    gradient_checkpointing: bool = setting(False, "Recompute block activations in backward to save memory.")
    max_bad_steps: int = setting(
        5, "Steps in a row whose loss or gradients are not finite (each is skipped) before the run goes back "
        "to its last checkpoint with half the learning rate, once; a second time it stops.", min=1,
    )
    processes: int = setting(
        1, "Processes on this machine (DDP under torchrun; one per GPU). Each trains its share of every "
        "step's windows, so the data and the global batch stay the same.", min=1,
    )
    log_interval: int = setting(10, "Optimizer steps between metric reports.", min=1)
    eval_interval: int = setting(200, "Optimizer steps between evaluations.", min=1, zero_means="only at the end")
    eval_batches: int = setting(20, "Held-out batches per evaluation.", min=1)
    checkpoint_every_steps: int = setting(500, "Optimizer steps between checkpoints.", min=1, zero_means="off")
    checkpoint_every_minutes: float = setting(
        10.0, "Minutes between checkpoints.", min=0.0, min_exclusive=True, zero_means="off"
    )
    keep_last_checkpoints: int = setting(3, "Step checkpoints to keep.", min=1, zero_means="keep all")
    use_epoch_checkpoints: bool = setting(True, "Also checkpoint at the end of every epoch.")
    runs_dir: str = setting("runs", "Folder that holds run directories.")
    clean_cuda_cache: bool = setting(False, "Empty the CUDA cache after each evaluation (slower, less fragmentation).")
    init_from: str = setting(
        "", "Start from another run's weights and tokenizer (fine-tuning): a run directory (its latest "
        "checkpoint) or one checkpoint folder; empty = train from scratch. `train --init-from RUN_DIR` fills it in."
    )
    init_from_sha256: str = setting(
        "", "SHA-256 of the starting weights (the checkpoint's model.safetensors), recorded when the run starts; "
        "a resume refuses weights that changed since. Leave empty."
    )

    @property
    def tokens_per_step(self) -> int:
        """Tokens the optimizer sees per step (one process)."""
        return self.batch_size * self.accumulation_steps * self.max_seq_len


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    source: str = setting(
        "python-stdlib",
        "An embedded corpus (python-stdlib, python-docs), a local file or folder, or a hub dataset id.",
    )
    hub_config: str = setting("", "Hub dataset configuration, e.g. wikitext-2-raw-v1.")
    split: str = setting("train", "Dataset split to read.")
    text_field: str = setting("text", "Column that holds the text (json / csv / parquet / hub).")
    subset_size: int = setting(0, "Documents to use.", min=1, zero_means="all")
    val_fraction: float = setting(0.02, "Fraction of documents held out for validation.", min=0.0, max=0.5,
                                  min_exclusive=True)
    tokenizer: str = setting(
        "bpe", "bpe (train one on the corpus), bytes, or a path / hub id AutoTokenizer loads."
    )
    tokenizer_vocab_size: int = setting(8192, "Vocabulary size when training a BPE tokenizer.", min=260)
    cache_dir: str = setting("", "Where tokenized data is cached.", zero_means="~/.cache/lightlm-tui")


ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
LORA_TARGETS = ATTN_TARGETS + MLP_TARGETS
LORA_SHORTHANDS = ("attn", "mlp", "all-linear")


def resolve_lora_targets(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The layer names `lora.target_modules` means, shorthands expanded, in the model's order.
    all-linear is peft's: every linear layer but the output head (ours is tied to the embedding,
    so that is every projection)."""
    wanted = set()
    for name in names:
        wanted.update({"attn": ATTN_TARGETS, "mlp": MLP_TARGETS, "all-linear": LORA_TARGETS}.get(name, (name,)))
    return tuple(name for name in LORA_TARGETS if name in wanted)



@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (LoRA) on a frozen base model: what is adapted and how strongly."""

    enabled: bool = setting(
        False, "Train low-rank adapters on frozen base weights (needs train.init_from) instead of all weights."
    )
    rank: int = setting(8, "Rank r of each adapter (A is r x in, B is out x r).", min=1)
    alpha: float = setting(16.0, "Scaling numerator: adapters are scaled by alpha / rank (alpha / sqrt(rank) "
                           "with use_rslora).", min=0.0, min_exclusive=True)
    dropout: float = setting(0.0, "Dropout on the adapters' input.", min=0.0, max=0.99)
    target_modules: tuple[str, ...] = setting(
        ["attn", "mlp"], "Linear layers that get adapters: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
        "down_proj, or attn (q/k/v/o), mlp (gate/up/down), all-linear (every linear layer but the output head). "
        "Mixture-of-experts feed-forwards stay frozen.",
    )
    use_rslora: bool = setting(False, "Rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank.")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: a name plus the sections of its TOML file."""

    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "lora": LoraConfig}


def describe_setting(meta: Mapping[str, Any], quote: Callable[[str], str] = str) -> str:
    """A setting's help with its allowed values, bounds and what 0 means (the docs' reference and the UI)."""
    parts = [meta["help"]]
    if meta.get("choices"):
        parts.append("One of: " + ", ".join(quote(c) for c in meta["choices"]) + ".")
    low, high, above = meta.get("min"), meta.get("max"), meta.get("min_exclusive")
    if low is not None and high is not None:
        parts.append(f"Range {'(' if above else '['}{low:g}, {high:g}].")
    elif low is not None:
        parts.append(f"{'Above' if above else 'At least'} {low:g}.")
    elif high is not None:
        parts.append(f"At most {high:g}.")
    if meta.get("zero_means"):
        parts.append(f"0 = {meta['zero_means']}.")
    return " ".join(parts)


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    """The fields of one TOML section, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}
