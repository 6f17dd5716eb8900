"""Training throughput: our Transformer against Hugging Face LlamaForCausalLM, same shape.

Both models get the same weights and the same random tokens and run the same step
(forward, cross-entropy over shifted targets, backward, AdamW). The two sides are
interleaved in one process, round by round, so the shared machine's clock drift hits both
alike; the figure per cell is the median over rounds, warm-up excluded. A matmul peak is
measured in the same run and MFU is reported against it (PaLM's 6N + attention FLOPs).

    python bench/throughput.py                 # everything (about 10 minutes on 2 cores)
    python bench/throughput.py --quick         # 5M shape, bf16, eager only
    python bench/throughput.py --shapes 5M --dtypes bf16 --compile both --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.model.estimates import flops_per_token, parameter_count
from engine.model.hf_compat import llama_config_kwargs, to_hf_state_dict
from engine.model.transformer import Transformer
from engine.machine.perf import matmul_peak_flops

SHAPES = {
    "5M": ModelConfig(vocab_size=8192, num_dims=256, num_heads=8, num_kv_heads=2, num_layers=4,
                      ffn_hidden_dims=688, context_len=256),
    "30M": ModelConfig(vocab_size=16384, num_dims=512, num_heads=8, num_kv_heads=2, num_layers=8,
                       ffn_hidden_dims=1376, context_len=256),
}
BATCH, SEQ = 8, 256


@dataclass
class Side:
    name: str
    step: callable
    timings: list


def make_step(model: torch.nn.Module, is_hf: bool, bf16: bool, compiled: bool):
    """A closure running one optimizer step on (idx, targets)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
    forward = torch.compile(model) if compiled else model

    def step(idx, targets):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            if is_hf:
                logits = forward(input_ids=idx).logits
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
            else:
                _, loss, _ = forward(idx, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def build_pair(config: ModelConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ours = Transformer(config).train()
    hf = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(config), attn_implementation="sdpa")).train()
    hf.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=False)
    return ours, hf


def run_cell(config: ModelConfig, bf16: bool, compiled: bool, rounds: int, steps: int) -> dict:
    ours, hf = build_pair(config)
    sides = [
        Side("ours", make_step(ours, False, bf16, compiled), []),
        Side("hf", make_step(hf, True, bf16, compiled), []),
    ]
    gen = torch.Generator().manual_seed(0)
    window = torch.randint(0, config.vocab_size, (BATCH, SEQ + 1), generator=gen)
    idx, targets = window[:, :-1].contiguous(), window[:, 1:].contiguous()
    warmup = 3 if compiled else 2
    compile_s = {}
    for side in sides:  # warm-up (and compilation) is timed separately, never counted
        start = time.perf_counter()
        for _ in range(warmup):
            side.step(idx, targets)
        compile_s[side.name] = time.perf_counter() - start
    for _ in range(rounds):
        for side in sides:
            start = time.perf_counter()
            for _ in range(steps):
                side.step(idx, targets)
            side.timings.append(BATCH * SEQ * steps / (time.perf_counter() - start))
    return {side.name: statistics.median(side.timings) for side in sides} | {
        "warmup_s": compile_s
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", default="both", choices=["no", "yes", "both"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round and side")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--quick", action="store_true", help="5M, bf16, eager, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.dtypes, args.compile, args.rounds = ["5M"], ["bf16"], "no", 3
    if args.threads:
        torch.set_num_threads(args.threads)
    compile_modes = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]

    peaks = {"fp32": matmul_peak_flops("cpu", torch.float32), "bf16": matmul_peak_flops("cpu", torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH} x seq {SEQ}; "
          f"median of {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    header = (f"{'shape':<6}{'params':>8} {'dtype':<5} {'compile':<8}{'ours tok/s':>11}{'HF tok/s':>10}{'ratio':>7}"
              f"{'MFU ours':>9}{'MFU HF':>8}")
    print(header)
    print("-" * len(header))
    for shape in args.shapes:
        config = SHAPES[shape]
        fpt = flops_per_token(config, SEQ)
        for dtype in args.dtypes:
            for compiled in compile_modes:
                cell = run_cell(config, dtype == "bf16", compiled, args.rounds, args.steps)
                peak = peaks[dtype]
                print(
                    f"{shape:<6}{parameter_count(config) / 1e6:>7.1f}M {dtype:<5} {'yes' if compiled else 'no':<8}"
                    f"{cell['ours']:>11,.0f}{cell['hf']:>10,.0f}{cell['ours'] / cell['hf']:>7.2f}"
                    f"{cell['ours'] * fpt / peak:>9.0%}{cell['hf'] * fpt / peak:>8.0%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
