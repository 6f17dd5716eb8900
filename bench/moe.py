"""Mixture-of-experts training throughput: our MoE against the dense model of equal *active*
parameters, and against Hugging Face MixtralForCausalLM holding the same weights.

Every side runs the same step on the same tokens (forward, loss, backward, AdamW; batch 8 x seq
256) and the sides are interleaved in one process, round by round, so the shared machine's
clock drift hits them alike; each figure is the median over rounds, warm-up excluded.

Sides:
  moe         our MoE (engine/model/moe.py: sorted dispatch, a loop over experts on the CPU)
  dense       our dense model whose feed-forward is k experts wide (same active parameters)
  hf-eager    MixtralForCausalLM, experts_implementation="eager" (its loop over hit experts)
  hf-default  MixtralForCausalLM as transformers builds it by default (grouped_mm experts)
  moe-grouped our MoE with torch._grouped_mm forced on (bf16 only; CUDA's path, run on the CPU
              to see whether it would pay there too)
Ratios are against `moe`. The goal: moe >= 0.6x dense, and faster than hf-eager.

    python bench/moe.py                      # both shapes, fp32 and bf16, 3 rounds
    python bench/moe.py --shapes laptop --dtypes bf16 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

import engine.model.moe as moe_module
from engine.config import ModelConfig
from engine.model.estimates import active_parameter_count, parameter_count
from engine.model.hf_compat import hf_config_kwargs, to_hf_state_dict
from engine.model.transformer import Transformer

BATCH, SEQ = 8, 256
SHAPES = {
    # presets/moe.toml's shape: 6 x 128, 4 experts of 176, top-2 (laptop's 352-wide FFN active).
    "laptop": ModelConfig(vocab_size=4096, num_dims=128, num_heads=2, num_kv_heads=1, num_layers=6,
                          ffn_hidden_dims=176, context_len=256, use_moe=True, moe_num_experts=4,
                          moe_active_experts=2),
    # bench/throughput.py's 5M shape with 8 experts of 344, top-2 (688 active).
    "5M": ModelConfig(vocab_size=8192, num_dims=256, num_heads=8, num_kv_heads=2, num_layers=4,
                      ffn_hidden_dims=344, context_len=256, use_moe=True, moe_num_experts=8, moe_active_experts=2),
}


def equal_active_dense(config: ModelConfig) -> ModelConfig:
    """The dense model a token of `config` costs the same as: one FFN k experts wide."""
    width = config.ffn_hidden_dims * (config.moe_active_experts + config.moe_shared_experts)
    return dataclasses.replace(config, use_moe=False, ffn_hidden_dims=width)


def make_step(model: torch.nn.Module, is_hf: bool, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)

    def step(idx, targets):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            if is_hf:
                logits = model(input_ids=idx).logits
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
            else:
                _, loss, _ = model(idx, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def forced_grouped(step):
    """`step` with our MoE's grouped-matmul path switched on (where the widths allow it)."""
    def run(idx, targets):
        original = moe_module.use_grouped_mm
        moe_module.use_grouped_mm = lambda x, dtype, shape: dtype == torch.bfloat16 and shape[1] % 8 == 0 \
            and shape[2] % 8 == 0
        try:
            return step(idx, targets)
        finally:
            moe_module.use_grouped_mm = original
    return run


def build_sides(config: ModelConfig, bf16: bool) -> dict:
    import transformers

    torch.manual_seed(0)
    ours = Transformer(config).train()
    dense = Transformer(equal_active_dense(config)).train()
    name, kwargs = hf_config_kwargs(config)
    sides = {"moe": make_step(ours, False, bf16), "dense": make_step(dense, False, bf16)}
    for label, experts in (("hf-eager", "eager"), ("hf-default", None)):
        extra = {"experts_implementation": experts} if experts else {}
        hf = transformers.MixtralForCausalLM(
            getattr(transformers, name)(**kwargs, attn_implementation="sdpa", **extra)).train()
        hf.load_state_dict(to_hf_state_dict(ours.state_dict(), config), strict=False)
        sides[label] = make_step(hf, True, bf16)
    if bf16:
        twin = Transformer(config).train()
        twin.load_state_dict(ours.state_dict())
        sides["moe-grouped"] = forced_grouped(make_step(twin, False, bf16))
    return sides


def run_cell(config: ModelConfig, bf16: bool, rounds: int, steps: int) -> dict[str, float]:
    sides = build_sides(config, bf16)
    window = torch.randint(0, config.vocab_size, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    idx, targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()
    for step in sides.values():  # warm-up, never counted
        for _ in range(2):
            step(idx, targets)
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, step in sides.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(idx, targets)
            timings[name].append(BATCH * SEQ * steps / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round and side")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH} x seq {SEQ}; "
          f"median of {args.rounds} interleaved rounds x {args.steps} steps; tokens/s (ratio to moe)")
    for shape in args.shapes:
        config = SHAPES[shape]
        print(f"{shape}: {parameter_count(config) / 1e6:.2f}M total, {active_parameter_count(config) / 1e6:.2f}M "
              f"active ({config.moe_active_experts} of {config.moe_num_experts} experts of "
              f"{config.ffn_hidden_dims}); dense twin {parameter_count(equal_active_dense(config)) / 1e6:.2f}M")
        for dtype in args.dtypes:
            cell = run_cell(config, dtype == "bf16", args.rounds, args.steps)
            figures = "  ".join(f"{name} {value:,.0f} ({value / cell['moe']:.2f})" for name, value in cell.items())
            print(f"  {dtype}: {figures}", flush=True)


if __name__ == "__main__":
    main()
