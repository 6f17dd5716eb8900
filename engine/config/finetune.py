"""A config set up to fine-tune another run: pure Python, so the app can build one without torch.

The fine-tune keeps the base's model shape (less the settings that change no weight) and its
tokenizer folder, and names where it starts from; the trainer checks all of it again and records
the exact checkpoint and its weights' SHA-256 when the run starts (engine/train/init_from.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.config.schema import ATTN_TARGETS, MLP_TARGETS, ModelConfig, RunConfig, resolve_lora_targets

# Settings a base and its fine-tune may differ in: none changes a weight's shape or what it computes.
FREE_MODEL_FIELDS = ("dropout", "use_cache", "use_flash")


def fine_tune_settings(config: RunConfig, base: RunConfig, base_run_dir: Path, init_from: str = "",
                       sha256: str = "") -> RunConfig:
    """`config` set up to start from the run in `base_run_dir` (whose config is `base`): the
    base's model shape (keeping this config's dropout and cache settings), its tokenizer folder,
    and train.init_from = `init_from` (default: the run directory) with its hash if known."""
    free = {name: getattr(config.model, name) for name in FREE_MODEL_FIELDS}
    return dataclasses.replace(
        config,
        model=dataclasses.replace(base.model, **free),
        data=dataclasses.replace(config.data, tokenizer=str(Path(base_run_dir) / "tokenizer"),
                                 tokenizer_vocab_size=base.data.tokenizer_vocab_size),
        train=dataclasses.replace(config.train, init_from=init_from or str(base_run_dir), init_from_sha256=sha256),
    )


def lora_parameter_count(model: ModelConfig, targets: tuple[str, ...], rank: int) -> int:
    """Adapter parameters: r x (in + out) for each targeted projection of each block (a
    mixture-of-experts feed-forward has none to target)."""
    c, d, f = model.num_dims, model.head_dim, model.ffn_hidden_dims
    sides = {
        "q_proj": (c, model.num_heads * d), "k_proj": (c, model.num_kv_heads * d),
        "v_proj": (c, model.num_kv_heads * d), "o_proj": (model.num_heads * d, c),
        "gate_proj": (c, f), "up_proj": (c, f), "down_proj": (f, c),
    }
    names = [n for n in resolve_lora_targets(targets) if n in ATTN_TARGETS or (n in MLP_TARGETS and not model.use_moe)]
    return model.num_layers * sum(rank * sum(sides[n]) for n in names)
