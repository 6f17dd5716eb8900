"""`validate(config)`: every problem of a RunConfig at once, each with the fix.

Per-field bounds come from the schema's metadata; the rules that tie fields together are
written out below. Validation never changes a value: it only reports.
"""

from __future__ import annotations

import dataclasses
import math

from engine.config.problems import ConfigProblem
from engine.config.schema import (
    BUILTIN_TOKENIZERS,
    EMBEDDED_CORPORA,
    LORA_SHORTHANDS,
    LORA_TARGETS,
    MLP_TARGETS,
    SECTIONS,
    resolve_lora_targets,
    RunConfig,
)


def validate(config: RunConfig, *, cuda_available: bool | None = None) -> list[ConfigProblem]:
    """Every problem with `config`, in field order; an empty list means it can be used.

    `cuda_available` enables the hardware rules (float16 needs CUDA); None skips them, for
    callers that check a config on a machine other than the one that will train it.
    """
    problems: list[ConfigProblem] = []
    for section in SECTIONS:
        problems += _field_bounds(section, getattr(config, section))
    problems += _model_rules(config)
    problems += _train_rules(config, cuda_available)
    problems += _data_rules(config)
    problems += _lora_rules(config)
    return problems


def field_problems(config: RunConfig) -> list[ConfigProblem]:
    """Only the problems of single values (bounds, allowed choices, finiteness): the ones an
    editor refuses outright, as opposed to rules that tie fields together."""
    return [p for section in SECTIONS for p in _field_bounds(section, getattr(config, section))]


def _field_bounds(section: str, values: object) -> list[ConfigProblem]:
    found = []
    for f in dataclasses.fields(values):
        meta, value, key = f.metadata, getattr(values, f.name), f"{section}.{f.name}"
        if meta.get("choices") and value not in meta["choices"]:
            options = ", ".join(meta["choices"])
            found.append(ConfigProblem(key, value, f"must be one of {options}."))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            found.append(ConfigProblem(key, value, "must be a finite number."))
            continue
        if meta.get("zero_means") and value == 0:
            continue
        low, high = meta.get("min"), meta.get("max")
        zero_hint = f" (or 0 for {meta['zero_means']})" if meta.get("zero_means") else ""
        if low is not None:
            if meta.get("min_exclusive") and value <= low:
                found.append(ConfigProblem(key, value, f"must be greater than {low:g}{zero_hint}."))
            elif not meta.get("min_exclusive") and value < low:
                found.append(ConfigProblem(key, value, f"must be at least {low:g}{zero_hint}."))
        if high is not None and value > high:
            found.append(ConfigProblem(key, value, f"must be at most {high:g}."))
    return found


def _divisors_near(n: int, target: int, limit: int = 3) -> str:
    """Up to `limit` divisors of n closest to target, as 'a, b or c'."""
    divisors = sorted((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))
    picks = sorted(divisors[:limit])
    if len(picks) == 1:
        return str(picks[0])
    return ", ".join(map(str, picks[:-1])) + f" or {picks[-1]}"


def _model_rules(config: RunConfig) -> list[ConfigProblem]:
    m, found = config.model, []
    if m.num_dims >= 1 and m.num_heads >= 1:
        if m.num_dims % m.num_heads:
            found.append(ConfigProblem(
                "model.num_heads", m.num_heads,
                f"num_dims ({m.num_dims}) must be divisible by num_heads; try num_heads = "
                f"{_divisors_near(m.num_dims, m.num_heads)}.",
            ))
        elif m.head_dim % 2:
            found.append(ConfigProblem(
                "model.num_heads", m.num_heads,
                f"head size num_dims / num_heads = {m.head_dim} must be even for rotary position "
                "embeddings; change num_heads or num_dims so the quotient is even.",
            ))
    if m.num_heads >= 1 and m.num_kv_heads >= 1 and m.num_heads % m.num_kv_heads:
        found.append(ConfigProblem(
            "model.num_kv_heads", m.num_kv_heads,
            f"num_heads ({m.num_heads}) must be divisible by num_kv_heads; try num_kv_heads = "
            f"{_divisors_near(m.num_heads, m.num_kv_heads)}.",
        ))
    if m.use_moe:
        if m.moe_active_experts > m.moe_num_experts:
            found.append(ConfigProblem(
                "model.moe_active_experts", m.moe_active_experts,
                f"cannot route to more experts than exist (moe_num_experts = {m.moe_num_experts}); "
                f"set it to at most {m.moe_num_experts}.",
            ))
        if m.use_lossfreebalance and m.moe_bias_update_rate == 0 and m.moe_active_experts < m.moe_num_experts:
            found.append(ConfigProblem(
                "model.moe_bias_update_rate", 0,
                "loss-free balancing moves the routing bias by this rate and 0 never moves it; "
                "set a rate such as 0.001, or use_lossfreebalance = false for the auxiliary loss.",
            ))
    return found


def _train_rules(config: RunConfig, cuda_available: bool | None) -> list[ConfigProblem]:
    t, found = config.train, []
    windows = t.batch_size * t.accumulation_steps
    if t.processes > 1 and windows % t.processes:
        found.append(ConfigProblem(
            "train.processes", t.processes,
            f"a step's {windows} windows (batch_size x accumulation_steps) must split evenly over the "
            f"processes; use a divisor of {windows} or change accumulation_steps.",
        ))
    if t.max_seq_len > config.model.context_len:
        found.append(ConfigProblem(
            "train.max_seq_len", t.max_seq_len,
            f"windows cannot be longer than the model's context_len ({config.model.context_len}); "
            f"lower max_seq_len or raise model.context_len.",
        ))
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        found.append(ConfigProblem(
            "train.betas", list(t.betas), "must be two numbers in [0, 1), e.g. [0.9, 0.95]."
        ))
    if t.use_dtype == "float16" and cuda_available is False:
        found.append(ConfigProblem(
            "train.use_dtype", t.use_dtype,
            "float16 training needs a CUDA GPU and none is available; use bfloat16 or auto.",
        ))
    if not t.runs_dir.strip():
        found.append(ConfigProblem("train.runs_dir", t.runs_dir, "must name a folder, e.g. runs."))
    return found


def _lora_rules(config: RunConfig) -> list[ConfigProblem]:
    """Rules a config file alone can break; the base model's own shapes are checked when a run starts
    (engine/model/lora.py)."""
    lora, m, found = config.lora, config.model, []
    if not lora.enabled:
        return found
    if not config.train.init_from.strip():
        found.append(ConfigProblem(
            "lora.enabled", True, "LoRA adapts a trained model: set train.init_from to a run directory "
            "(lightlm-tui train --init-from RUN_DIR), or enabled = false to train all weights.",
        ))
    known = LORA_TARGETS + LORA_SHORTHANDS
    unknown = [name for name in lora.target_modules if name not in known]
    if not lora.target_modules:
        found.append(ConfigProblem("lora.target_modules", [], f"name at least one layer: {', '.join(known)}."))
    elif unknown:
        found.append(ConfigProblem(
            "lora.target_modules", list(lora.target_modules),
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a layer of this model; "
            f"the layers are {', '.join(LORA_TARGETS)} (or attn, mlp, all-linear).",
        ))
    if (m.use_moe and lora.target_modules and not unknown
            and not set(resolve_lora_targets(lora.target_modules)) - set(MLP_TARGETS)):
        found.append(ConfigProblem(
            "lora.target_modules", list(lora.target_modules),
            "this is a mixture-of-experts model: its experts are stacked tensors, not linear layers, and stay "
            "frozen with the router; target the attention (attn) instead.",
        ))
    return found


def _data_rules(config: RunConfig) -> list[ConfigProblem]:
    d, found = config.data, []
    if not d.source.strip():
        found.append(ConfigProblem(
            "data.source", d.source,
            f"name a corpus: {', '.join(EMBEDDED_CORPORA)}, a local file or folder, or a hub dataset id.",
        ))
    if not d.tokenizer.strip():
        found.append(ConfigProblem(
            "data.tokenizer", d.tokenizer,
            f"use {' or '.join(BUILTIN_TOKENIZERS)}, or a path / hub id that AutoTokenizer loads.",
        ))
    if d.tokenizer == "bpe" and config.model.vocab_size != d.tokenizer_vocab_size:
        found.append(ConfigProblem(
            "model.vocab_size", config.model.vocab_size,
            f"the BPE tokenizer is trained with data.tokenizer_vocab_size = {d.tokenizer_vocab_size} "
            "tokens and the model's vocabulary must match it; set both to the same value.",
        ))
    return found
