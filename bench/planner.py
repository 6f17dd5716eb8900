"""Does a planned run end on time, use the memory it predicts, and learn more than the alternatives?

    python bench/planner.py timing  [--budgets 1m 3m 10m] [--rounds 3]
    python bench/planner.py quality [--budget 5m] [--rounds 1]

timing: `lightlm-tui train --preset laptop --budget B` in a fresh process per run; its whole
wall time (interpreter start to exit) against B, and its peak RSS (from wait4) against the
plan's predicted peak. Target: within +-3 % of the budget; memory within +-20 %.

quality: three runs of the same budget on the embedded python-stdlib corpus, interleaved:
  planned  `train --preset laptop --budget B` (the planner sizes the model);
  adamw    (only with --only) the same plan with AdamW instead of Muon: what the optimizer adds;
  laptop   the `laptop` preset with train.time_budget_s = B (so it also uses the whole budget);
  upstream upstream LightLM's tier for a budget under half an hour (from its time optimizer: 15 layers
           of 512, 8 heads, 8 kv, ffn 1536, window 512, batch 2 with gradient checkpointing
           since there is no GPU with 8 GB, lr 1e-3 held constant, warmup 1 %, 5 % of the
           corpus), given our time-driven clock so it too stops at B. It asks for float16
           and a 49k pretrained tokenizer; neither exists here, so it gets bf16 and an 8192 BPE.
Each final checkpoint is scored on the same held-out text (the corpus's validation documents
that none of the runs trained on), in bits per byte, so different tokenizers compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.config.durations import format_budget, parse_budget
from engine.config import load_preset, save_config

SEED_SUBSET_SHARE = 0.05


def run_cli(args: list[str], scratch: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, output) of `lightlm-tui ARGS` in a fresh process."""
    env = dict(os.environ, XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")))
    log = scratch / f"run-{time.time_ns()}.log"
    with open(log, "wb") as handle:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                                 env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    if child.returncode != 0:
        raise RuntimeError(f"lightlm-tui {' '.join(args)} failed:\n{output[-2000:]}")
    return wall, usage.ru_maxrss / 1024, output


def predicted_peak_mb(output: str) -> float:
    match = re.search(r"memory\s+([\d,]+) MB", output)
    return float(match.group(1).replace(",", "")) if match else float("nan")


def timing(budgets: list[str], rounds: int) -> None:
    rows: dict[str, list[tuple[float, float, float]]] = {b: [] for b in budgets}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(rounds):
            for budget in budgets:
                wall, peak, output = run_cli(["train", "--preset", "laptop", "--budget", budget, "--runs-dir",
                                              f"{scratch}/runs", "--name", f"t{round_index}-{budget}"], Path(scratch))
                rows[budget].append((wall, peak, predicted_peak_mb(output)))
                seconds = parse_budget(budget)
                print(f"round {round_index + 1}: budget {budget:>4}  wall {wall:7.1f} s "
                      f"({(wall - seconds) / seconds:+.1%})"
                      f"  peak RSS {peak:,.0f} MB, predicted {rows[budget][-1][2]:,.0f} MB", flush=True)
    print(f"\n`train --preset laptop --budget B`, whole process, median of {rounds}")
    print(f"{'budget':>7} {'wall':>9} {'error':>7} {'peak RSS':>10} {'predicted':>10} {'error':>7}")
    for budget, values in rows.items():
        seconds = parse_budget(budget)
        wall = statistics.median(v[0] for v in values)
        peak = statistics.median(v[1] for v in values)
        predicted = statistics.median(v[2] for v in values)
        print(f"{budget:>7} {wall:8.1f}s {(wall - seconds) / seconds:+7.1%} {peak:9,.0f}M {predicted:9,.0f}M"
              f" {(predicted - peak) / peak:+7.1%}")


def upstream_tier_config(budget_s: float, runs_dir: str):
    """upstream LightLM's tier for budgets under half an hour, made runnable here (see the module doc)."""
    from engine.data.embedded import embedded_documents

    laptop = load_preset("laptop")
    documents = len(embedded_documents("python-stdlib"))
    return dataclasses.replace(
        laptop, name="upstream-tier",
        model=dataclasses.replace(laptop.model, num_layers=15, num_dims=512, num_heads=8, num_kv_heads=8,
                                  ffn_hidden_dims=1536, context_len=2048, vocab_size=8192),
        train=dataclasses.replace(laptop.train, time_budget_s=budget_s, max_steps=0, num_epochs=5, max_seq_len=512,
                                  batch_size=2, accumulation_steps=1, learning_rate=1e-3, warmup_ratio=0.01,
                                  min_lr_ratio=1.0, gradient_checkpointing=True, eval_interval=0,
                                  checkpoint_every_steps=0, runs_dir=runs_dir),
        data=dataclasses.replace(laptop.data, subset_size=max(2, round(SEED_SUBSET_SHARE * documents)),
                                 tokenizer_vocab_size=8192),
    )


def held_out_bpb(run_dir: Path, skip_first: int) -> float:
    """Bits per byte of the run's final model on the full corpus's validation documents,
    leaving out the first `skip_first` documents (upstream LightLM's subset could include them)."""
    import math

    import numpy as np
    import torch

    from engine.config import load_config
    from engine.data.embedded import embedded_documents
    from engine.data.token_store import validation_indices
    from engine.train.evaluate import evaluate_model
    from engine.runs.trained_run import load_run

    docs = embedded_documents("python-stdlib")
    held_out = [docs[i].text for i in validation_indices(len(docs), 0.02) if i >= skip_first]
    run = load_run(run_dir)
    ids: list[int] = []
    for encoded in run.tokenizer.encode_batch(held_out):
        ids += encoded + [run.tokenizer.eos_id]
    tokens = np.asarray(ids, dtype=np.int64)
    text_bytes = sum(len(t.encode("utf-8")) for t in held_out)
    seq = min(load_config(run_dir / "config.toml").train.max_seq_len, len(tokens) - 1)
    windows = max(1, len(tokens) // seq)
    figures = evaluate_model(run.model, tokens, text_bytes / len(tokens), seq, 1, windows, torch.device("cpu"),
                             lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    return figures.val_loss / math.log(2) / (text_bytes / len(tokens))


def quality(budget: str, rounds: int, only: list[str] | None = None) -> None:
    seconds = parse_budget(budget)
    results: dict[str, list[float]] = {"planned": [], "adamw": [], "laptop": [], "upstream": []}
    with tempfile.TemporaryDirectory() as scratch:
        runs = f"{scratch}/runs"
        upstream_config = upstream_tier_config(seconds, runs)
        upstream_toml = Path(scratch) / "upstream.toml"
        save_config(upstream_config, upstream_toml)
        for round_index in range(rounds):
            commands = {
                "planned": ["train", "--preset", "laptop", "--budget", budget],
                "adamw": ["train", "--preset", "laptop", "--budget", budget, "--set", "train.optimizer=adamw"],
                "laptop": ["train", "--preset", "laptop", "--set", f"train.time_budget_s={seconds}"],
                "upstream": ["train", "--config", str(upstream_toml)],
            }
            for name, args in commands.items():
                if name not in (only or ["planned", "laptop", "upstream"]):
                    continue
                run_dir = Path(runs) / f"{name}-{round_index}"
                wall, _, output = run_cli([*args, "--runs-dir", runs, "--run-dir", str(run_dir)], Path(scratch))
                bpb = held_out_bpb(run_dir, skip_first=upstream_config.data.subset_size)
                results[name].append(bpb)
                steps = re.findall(r"Finished \(\w+\) at step (\d+)", output)
                print(f"round {round_index + 1}: {name:<8} wall {wall:6.1f} s, {steps[-1] if steps else '?'} steps, "
                      f"held-out {bpb:.4f} bits/byte", flush=True)
    print(f"\n{format_budget(seconds)} on python-stdlib, held-out bits per byte (lower is better), median of {rounds}")
    for name, values in results.items():
        if values:
            print(f"  {name:<8} {statistics.median(values):.4f}  ({', '.join(f'{v:.4f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    time_parser = commands.add_parser("timing")
    time_parser.add_argument("--budgets", nargs="+", default=["1m", "3m", "10m"])
    time_parser.add_argument("--rounds", type=int, default=3)
    quality_parser = commands.add_parser("quality")
    quality_parser.add_argument("--budget", default="5m")
    quality_parser.add_argument("--rounds", type=int, default=1)
    quality_parser.add_argument("--only", nargs="+", choices=["planned", "adamw", "laptop", "upstream"],
                                help="run only these")
    args = parser.parse_args()
    if args.command == "timing":
        timing(args.budgets, args.rounds)
    else:
        quality(args.budget, args.rounds, args.only)


if __name__ == "__main__":
    main()
