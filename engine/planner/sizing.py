"""Spend a training time on parameters N and tokens D: the best shape that fits.

For every sane shape (shapes.py) the calibration says how many tokens D it trains in the time
(FLOP/s at its width / its FLOPs per token, x 0.75 with gradient checkpointing). The shape
whose tokens per parameter D/N is closest to the target ratio wins, with a preference for the
depth/width proportion that won on this machine, subject to memory and to the data.

The rule at tiny scale, and why. Chinchilla's D = 20 N holds for models of 100M+ parameters.
Measured here instead, at 5 minutes on 2 CPU cores:
- the sweep (docs/laptop-preset.md: 10 shapes, each trained for the same 300 s): 1.6M
  parameters on 8M tokens (~5 per parameter) beat 1.3M on 12M (19 per parameter, near
  Chinchilla's rule) by 0.15 bits/byte, and 3-8M on 3-6M tokens by 0.12 or more;
- bench/planner.py: a first version of this planner aimed at 5 per parameter and chose
  128 x 5 (1.45M, 7.9M tokens); the laptop preset's 128 x 6 (1.63M, 7.2M: 4.4 per
  parameter) beat it by 0.03 bits/byte in the same 300 s.
So the target is 4 tokens per parameter as the calibration predicts them (it runs ~10 % low:
its 4-layer models carry more head overhead than deeper ones), depth is preferred near the
winner's 21 dims per layer, and the target grows gently with compute as the compute-optimal
ratio does (x (C / C_sweep)^0.1, from Chinchilla's exponents 0.34 / 0.28). Chinchilla's own
fitted law was tried too and ranked the sweep's shapes nearly backwards at this scale.

Data: past MAX_EPOCHS passes over the corpus, repeated tokens are worth much less
(Muennighoff et al. 2023), so shapes that would need more are penalised (a bigger model that
sees the data fewer times wins) and the plan warns.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from engine.config import ModelConfig, TrainConfig
from engine.model.estimates import flops_per_token, parameter_count, training_memory
from engine.planner.shapes import Shape, candidate_shapes

TOKENS_PER_PARAM = 4.0  # measured optimum at the sweep's compute, in the calibration's units
SWEEP_COMPUTE = 6 * 1.63e6 * 7.9e6  # the sweep winner's 6 N D
COMPUTE_EXPONENT = 0.1
BEST_ASPECT = 21.0  # dims / layers of the sweep's winner (128 x 6)
ASPECT_WEIGHT = 1.0
MAX_EPOCHS = 4.0
CHECKPOINTING_SPEED = 0.75  # recomputing each block's forward costs about a third more


@dataclass(frozen=True)
class Candidate:
    shape: Shape
    params: int
    flops_per_token: int
    tokens_per_s: float
    tokens: float  # trained in the time
    epochs: float
    memory_bytes: float  # predicted training memory (measured factor applied), baseline excluded
    checkpointing: bool
    score: float  # distance from the ideal (lower is better)


def target_ratio(params: float, tokens: float) -> float:
    """Tokens per parameter to aim for at this compute."""
    return TOKENS_PER_PARAM * (6 * params * tokens / SWEEP_COMPUTE) ** COMPUTE_EXPONENT


def shape_score(shape: Shape, params: float, tokens: float, epochs: float) -> float:
    """0 for the ideal: the target tokens per parameter, the sweep's proportions, data to spare."""
    ratio = tokens / params
    score = abs(math.log(ratio / target_ratio(params, tokens)))
    score += ASPECT_WEIGHT * abs(math.log(shape.dims / shape.layers / BEST_ASPECT))
    if epochs > MAX_EPOCHS:
        score += math.log(epochs / MAX_EPOCHS)
    return score


def bytes_per_token(vocab: int) -> float:
    """Byte-level BPE on source code and prose: 3.49 bytes a token at 8192 (measured on the
    stdlib corpus), a little less for smaller vocabularies."""
    return 3.49 * (vocab / 8192) ** 0.12


def evaluate_shape(shape: Shape, base: ModelConfig, train: TrainConfig, seconds: float, flops_at,
                   unique_tokens: float, memory_limit: float, memory_factor: float,
                   device_type: str) -> Candidate | None:
    """`shape` trained for `seconds`, or None when it cannot fit in memory even with checkpointing."""
    model = shape.model_config(base)
    for checkpointing in (False, True):
        shaped = dataclasses.replace(train, max_seq_len=shape.seq_len, gradient_checkpointing=checkpointing)
        memory = memory_factor * training_memory(model, shaped, device_type=device_type).total
        if memory <= memory_limit:
            break
    else:
        return None
    params, per_token = parameter_count(model), flops_per_token(model, shape.seq_len)
    tokens_per_s = flops_at(shape.dims) / per_token * (CHECKPOINTING_SPEED if checkpointing else 1.0)
    tokens = tokens_per_s * seconds
    epochs = tokens / max(1.0, unique_tokens)
    return Candidate(shape, params, per_token, tokens_per_s, tokens, epochs, memory, checkpointing,
                     shape_score(shape, params, tokens, epochs))


def best_candidate(base: ModelConfig, train_for, seconds: float, flops_at, corpus_bytes: float,
                   memory_limit: float, memory_factor: float = 1.0, device_type: str = "cpu",
                   unique_tokens_for=None) -> Candidate:
    """The best-scoring shape for `seconds` of training. `train_for(shape)` gives the TrainConfig
    (batch, window) a shape would train with; `unique_tokens_for(vocab)` the corpus size in
    tokens when known (else estimated from `corpus_bytes`)."""
    best: Candidate | None = None
    for shape in candidate_shapes():
        unique = ((unique_tokens_for(shape.vocab) if unique_tokens_for else None)
                  or corpus_bytes / bytes_per_token(shape.vocab))
        candidate = evaluate_shape(shape, base, train_for(shape), seconds, flops_at, unique, memory_limit,
                                   memory_factor, device_type)
        if candidate is not None and (best is None or candidate.score < best.score):
            best = candidate
    if best is None:
        raise ValueError("no model shape fits in memory")
    return best
