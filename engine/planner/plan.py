"""A time budget and a starting config become a planned RunConfig with its predictions.

    plan = make_plan(300, load_preset("laptop"))
    plan.config          # the sized config, train.time_budget_s = 300
    plan.reasons         # why each choice was made, one sentence each

The budget covers the whole run: set-up (imports, data, tokenizer), calibration when not
cached, training, periodic and final evaluation, the final checkpoint and exit. Training gets
what is left; the run itself then stops by the clock (engine/train/budget_clock.py), so a
prediction that is off changes how many steps run, never when the run ends.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

from engine.config.durations import format_budget
from engine.config import RunConfig, TrainConfig, validate
from engine.errors import UserFacingError
from engine.planner.calibrate import Calibration
from engine.planner.shapes import Shape
from engine.planner.sizing import MAX_EPOCHS, Candidate, best_candidate

# Wall time outside the training loop, measured on the 2-core machine: interpreter and torch
# start (~2 s), corpus read and hashed (~1 s); tokenising a corpus not yet cached runs at
# about 3 MB/s including BPE training.
STARTUP_S = 3.5
TOKENIZE_BYTES_PER_S = 3e6
EVALS_PER_RUN = 4  # periodic evaluations, plus the final one
EVAL_BATCHES = 10
MIN_TRAIN_S = 10.0
# torch.compile: 22-45 s before the first step here when cold; our eager kernels leave it
# 1-6 % to gain on CPU (bench/throughput.py). It pays only when that gain outruns the cost.
COMPILE_COST_S = 45.0
COMPILE_GAIN = {"cpu": 0.05, "cuda": 0.15}
MEMORY_HEADROOM = 0.8  # of what is free: the OS, the UI and the data need the rest
# Muon for the hidden matrices: at 5 minutes on 2 CPU cores it beat AdamW with the same
# model, batch and learning rate by 0.2 held-out bits/byte (1.19 against 1.39, bench/planner.py
# quality --only planned adamw), for 7-10 % fewer tokens/s (its Newton-Schulz products).
# Calibration times steps with it.
PLANNED_OPTIMIZER = "muon"


class PlanError(UserFacingError):
    """A budget or machine the planner cannot make a run for; says what would work."""


@dataclass(frozen=True)
class Plan:
    config: RunConfig
    budget_s: float
    train_s: float
    overhead_s: float
    candidate: Candidate
    predicted_steps: int
    peak_memory_mb: float
    memory_limit_mb: float
    unique_tokens: float
    calibration: Calibration
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        c = self.candidate
        return {
            "budget_s": self.budget_s, "train_s": round(self.train_s, 1), "overhead_s": round(self.overhead_s, 1),
            "params": c.params, "shape": {"dims": c.shape.dims, "layers": c.shape.layers},
            "tokens": round(c.tokens), "tokens_per_s": round(c.tokens_per_s), "epochs": round(c.epochs, 2),
            "predicted_steps": self.predicted_steps, "peak_memory_mb": round(self.peak_memory_mb),
            "memory_limit_mb": round(self.memory_limit_mb), "gradient_checkpointing": c.checkpointing,
            "calibration": {"cached": self.calibration.from_cache, "seconds": round(self.calibration.seconds, 1),
                            "device": self.calibration.device_name, "dtype": self.calibration.dtype},
            "reasons": self.reasons, "warnings": self.warnings,
        }


def summary_lines(plan: Plan) -> list[str]:
    """The plan in a few aligned lines (the CLI prints them; the Budget screen shows them)."""
    c, t = plan.candidate, plan.config.train
    memory = f"{plan.peak_memory_mb:,.0f} MB of {plan.memory_limit_mb / MEMORY_HEADROOM:,.0f} MB free"
    return [
        f"budget      {format_budget(plan.budget_s)} ({plan.train_s:.0f} s of it training)",
        f"model       {c.shape}, {c.params / 1e6:.2f}M parameters",
        f"tokens      {c.tokens / 1e6:.1f}M at {c.tokens_per_s:,.0f} tokens/s, {c.epochs:.1f} epochs of the corpus",
        f"steps       about {plan.predicted_steps:,} of {t.batch_size} x {t.max_seq_len} tokens (time decides)",
        f"memory      {memory} (peak {'RSS' if plan.calibration.device == 'cpu' else 'VRAM'})",
    ]


def learning_rate_for(dims: int) -> float:
    """5e-3 at 128 wide (the sweep's best; 5e-3 beat 3e-3 there, 3e-3 beat 2e-3 at 192),
    falling as width^-0.75 for wider models, within [3e-4, 6e-3]."""
    return min(6e-3, max(3e-4, 5e-3 * (128 / dims) ** 0.75))


def make_plan(
    budget_s: float,
    base: RunConfig,
    calibration: Calibration,
    corpus_bytes: float,
    memory_available_bytes: float,
    elapsed_s: float = 0.0,
    tokens_cached: bool = True,
    unique_tokens_for=None,
    base_rss_mb: float | None = None,
) -> Plan:
    """Size `base` for `budget_s` seconds of wall time, `elapsed_s` of which are already spent
    (the calling process's start, planning). `unique_tokens_for(vocab)` gives the corpus's
    exact token count where a token store is cached; otherwise it is estimated from bytes.
    `base_rss_mb`: the process before training (torch, data libraries, the corpus), when
    measured; else the calibration's (torch only)."""
    device = calibration.device
    tokenize_s = 0.0 if tokens_cached else corpus_bytes / TOKENIZE_BYTES_PER_S
    fixed_s = elapsed_s + STARTUP_S + tokenize_s
    # Evaluations and the final checkpoint take a few percent; 6 % covers them at these sizes.
    train_s = (budget_s - fixed_s) * 0.94
    if train_s < MIN_TRAIN_S:
        shortest = math.ceil((fixed_s + MIN_TRAIN_S / 0.94) / 5) * 5
        raise PlanError(
            f"a budget of {format_budget(budget_s)} leaves {max(0.0, train_s):.0f} s to train after "
            f"{fixed_s:.0f} s of set-up{' and tokenising' if tokenize_s else ''}; "
            f"give at least {format_budget(shortest)}"
        )
    compile_on = COMPILE_GAIN.get(device, 0.0) * train_s > COMPILE_COST_S
    if compile_on:
        train_s -= COMPILE_COST_S
    memory_limit = MEMORY_HEADROOM * memory_available_bytes

    def train_for(shape: Shape) -> TrainConfig:
        return dataclasses.replace(
            base.train, batch_size=max(1, calibration.tokens_per_step // shape.seq_len), max_seq_len=shape.seq_len,
            use_dtype=calibration.dtype, accumulation_steps=1, optimizer=calibration.optimizer,
        )

    try:
        best = best_candidate(base.model, train_for, train_s, calibration.flops_at, corpus_bytes, memory_limit,
                              calibration.memory_factor, device, unique_tokens_for)
    except ValueError:
        raise PlanError(f"no model fits in the {memory_limit / 2**30:.1f} GiB of memory free here; "
                        "close other programs or use a machine with more memory") from None
    shape = best.shape
    train = train_for(shape)
    steps = max(1, int(best.tokens / (train.batch_size * train.max_seq_len)))
    lr = learning_rate_for(shape.dims)
    config = dataclasses.replace(
        base,
        name=base.name if base.name.startswith("plan") else f"plan-{format_budget(budget_s)}",
        model=shape.model_config(base.model),
        train=dataclasses.replace(
            train, use_dtype=base.train.use_dtype, time_budget_s=float(budget_s), max_steps=steps, num_epochs=1,
            learning_rate=lr,
            warmup_ratio=0.05, min_lr_ratio=0.0, gradient_checkpointing=best.checkpointing, use_compile=compile_on,
            eval_interval=max(10, steps // (EVALS_PER_RUN + 1)), eval_batches=EVAL_BATCHES,
            log_interval=max(1, min(10, steps // 100)), checkpoint_every_steps=0,
            checkpoint_every_minutes=max(5.0, round(budget_s / 60 / 4, 1)), use_epoch_checkpoints=False,
        ),
        data=dataclasses.replace(base.data, tokenizer_vocab_size=shape.vocab)
        if base.data.tokenizer == "bpe" else base.data,
    )
    if base.data.tokenizer != "bpe":
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=base.model.vocab_size))
    problems = validate(config, cuda_available=device == "cuda")
    if problems:  # a planner bug, not the user's: say so plainly
        raise PlanError("the planned config is invalid (a planner bug): " + "; ".join(map(str, problems)))

    if device == "cpu":  # the token arrays are memory-mapped and read whole over an epoch
        token_mb = 2 * ((unique_tokens_for(shape.vocab) if unique_tokens_for else None) or 0) / 2**20
        peak_mb = (base_rss_mb or calibration.base_rss_mb) + token_mb + best.memory_bytes / 2**20
    else:
        peak_mb = best.memory_bytes / 2**20
    unique = best.tokens / max(best.epochs, 1e-9)
    reasons = [
        f"{best.shape}: {best.params / 1e6:.2f}M parameters trained on {best.tokens / 1e6:.1f}M tokens "
        f"({best.tokens / best.params:.1f} per parameter; measured best at this scale: about 4, "
        "where Chinchilla's 20 is for far larger models)",
        f"speed: {best.tokens_per_s:,.0f} tokens/s predicted from the calibration "
        f"({calibration.flops_at(shape.dims) / 1e9:.0f} GFLOP/s at {shape.dims} wide, {calibration.dtype}"
        f"{', cached' if calibration.from_cache else f', measured in {calibration.seconds:.0f} s'})",
        f"time: {format_budget(budget_s)} = {fixed_s:.0f} s set-up"
        f"{f' (incl. {tokenize_s:.0f} s tokenising)' if tokenize_s else ''} + {train_s:.0f} s training"
        f"{f' + {COMPILE_COST_S:.0f} s compiling' if compile_on else ''} + evaluations and the final checkpoint; "
        "the learning rate follows the clock, so the schedule ends when the budget does",
        f"heads: {shape.heads} of {shape.head_dim} ({shape.kv_heads} kv), SwiGLU {shape.ffn}, "
        f"vocabulary {shape.vocab}, window {shape.seq_len}, batch {train.batch_size}",
        f"learning rate {lr:.1e}: small models want a high one (5e-3 won at 128 wide in the sweep); "
        "5 % warmup, then cosine decay to zero, not to 10 %: decaying to zero ends a short run with less "
        "gradient noise in the weights (Bergsma et al. 2025, 'Straight to Zero')",
        f"optimizer {train.optimizer}: " + (
            "orthogonalised momentum (Muon) for the hidden matrices, AdamW for the embedding and norms; "
            "it learned far more per token than AdamW in the same minutes here, for a few % of speed"
            if train.optimizer == "muon" else "AdamW, decoupled weight decay on matrices"),
        "torch.compile on: its ~45 s compile pays back within the budget" if compile_on else
        f"torch.compile off: it costs up to {COMPILE_COST_S:.0f} s and gains ~{COMPILE_GAIN.get(device, 0):.0%} "
        "here, which this budget does not pay back",
    ]
    if best.checkpointing:
        reasons.append("gradient checkpointing on: without it this model would not fit in memory")
    warnings = []
    if best.epochs > MAX_EPOCHS:
        warnings.append(f"the corpus (about {unique / 1e6:.1f}M tokens) would be seen {best.epochs:.1f} times; "
                        "more data would train a better model in this budget")
    return Plan(config, float(budget_s), train_s, budget_s - train_s, best, steps, peak_mb,
                memory_limit / 2**20, unique, calibration, reasons, warnings)


def plan_for_this_machine(budget_s: float, base: RunConfig, started_at: float | None = None,
                          use_cache: bool = True, trains_here: bool = True) -> Plan:
    """Calibrate (or reuse the cached calibration), look at the data, and plan. `started_at`:
    when the budget's clock started, if it has (train --budget counts from its process's
    start, so the planning itself is spent budget); None: the clock starts when training does
    (the app, whose run starts when Start is pressed, and `plan`), so planning costs the run
    nothing. `trains_here`: this process will also train (train --budget, the app), so the
    trainer's own copy of the corpus comes on top of the one loaded here; a plan written for a
    later process has one."""
    import psutil

    from engine.data.sources import load_documents
    from engine.machine.perf import process_ram_mb
    from engine.planner.calibrate import calibrate
    from engine.planner.corpus import corpus_facts

    calibration = calibrate(max_seconds=min(20.0, 0.1 * budget_s), use_cache=use_cache, use_dtype=base.train.use_dtype,
                            optimizer=PLANNED_OPTIMIZER)
    before_corpus_mb = process_ram_mb()
    documents = load_documents(base.data)
    facts = corpus_facts(documents, base.data)
    loaded_mb = process_ram_mb()  # torch, data libraries and the corpus
    base_rss_mb = loaded_mb + (loaded_mb - before_corpus_mb if trains_here else 0.0)
    if calibration.device == "cuda":
        import torch

        memory = torch.cuda.get_device_properties(0).total_memory
    else:
        memory = psutil.virtual_memory().available
    return make_plan(budget_s, base, calibration, facts.train_bytes, memory,
                     elapsed_s=time.time() - started_at if started_at is not None else 0.0,
                     tokens_cached=facts.any_cached,
                     unique_tokens_for=facts.train_tokens_for, base_rss_mb=base_rss_mb)
