"""LoRA against full fine-tuning of the same base on the same new text, for the same wall time.

A base is trained first (the laptop preset's shape on the Python standard library's sources, for
--base-budget), or given with --base RUN_DIR. Each side then fine-tunes it on the Python docs
with the same time budget (train.time_budget_s: the schedule follows the clock and the run ends
on time), the same seed, data order, batch and learning-rate schedule:
  lora   rank 8 on attention + MLP (lora.target_modules = ["attn", "mlp"]), the base frozen
  full   every weight trained (lora.enabled = false)
Each run is its own process (so its peak memory is its own), sides alternate round by round so
the shared machine's drift hits both alike, and every figure is the median over rounds:
  step time        median seconds per optimizer step over the run's reports (evaluation and
                   checkpoint time excluded)
  peak memory      the process's peak RSS (CPU) or torch's peak CUDA allocation (GPU)
  checkpoint size  the final checkpoint folder on disk (LoRA: adapters, their optimizer state
                   and the reference to the base; full: every weight and its optimizer state)
  val bpb          held-out bits per byte of the Python docs at the end of the budget

    python bench/lora.py                                  # 3 rounds, 60 s each side, base 300 s
    python bench/lora.py --rounds 3 --budget 60 --base runs/laptop-...   # an existing base
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDES = ("lora", "full")


def train_base(runs_dir: Path, budget_s: float) -> Path:
    """The laptop preset on the standard library for `budget_s` seconds; returns its run dir."""
    from engine.config import load_preset
    from engine.train.trainer import Trainer

    config = load_preset("laptop")
    config = dataclasses.replace(config, name="lora-bench-base", train=dataclasses.replace(
        config.train, time_budget_s=budget_s, runs_dir=str(runs_dir)))
    run_dir = runs_dir / "base"
    finished = Trainer(config, run_dir).run()
    if finished.status != "completed":
        raise SystemExit(f"the base run failed: {finished.message}")
    return run_dir


def side_config(side: str, base_dir: Path, budget_s: float, runs_dir: Path):
    """The fine-tune config of one side: the base's shape and tokenizer, the docs as new text."""
    from engine.config import load_preset
    from engine.config.schema import LoraConfig
    from engine.train.init_from import finetune_config, resolve_base

    preset = load_preset("laptop")
    config = dataclasses.replace(
        preset, name=f"lora-bench-{side}",
        data=dataclasses.replace(preset.data, source="python-docs"),
        train=dataclasses.replace(preset.train, time_budget_s=budget_s, runs_dir=str(runs_dir), eval_interval=0,
                                  checkpoint_every_steps=0, checkpoint_every_minutes=0.0,
                                  use_epoch_checkpoints=False, keep_last_checkpoints=1),
        lora=LoraConfig(enabled=side == "lora", rank=8, alpha=16.0, target_modules=("attn", "mlp")),
    )
    return finetune_config(config, resolve_base(base_dir))


def run_side(side: str, base_dir: Path, budget_s: float, out_dir: Path) -> dict:
    """One fine-tune, in this process (called in a child process by `main`)."""
    import torch

    from engine.runs.events import RunStarted, StepMetrics
    from engine.runs.checkpoint import checkpoints_dir, latest_name
    from engine.train.trainer import Trainer

    config = side_config(side, base_dir, budget_s, out_dir)
    events: list = []
    finished = Trainer(config, out_dir / side, events.append).run()
    steps = [e for e in events if isinstance(e, StepMetrics)]
    started = next(e for e in events if isinstance(e, RunStarted))
    if finished.status != "completed":
        raise SystemExit(f"{side} failed: {finished.message}")
    tokens = config.train.tokens_per_step
    if not any(e.tokens_per_s > 0 for e in steps):
        raise SystemExit(f"{side}: no step was reported within {budget_s:g} s; give it a longer --budget")
    checkpoint = checkpoints_dir(out_dir / side) / latest_name(out_dir / side)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "side": side,
        "step_s": statistics.median(tokens / e.tokens_per_s for e in steps if e.tokens_per_s > 0),
        "steps": finished.step,
        "trainable": started.trainable_params,
        "params": started.params,
        "peak_bytes": peak,
        "checkpoint_bytes": sum(f.stat().st_size for f in checkpoint.iterdir() if f.is_file()),
        "val_bpb": finished.val_bpb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per side and round")
    parser.add_argument("--base", type=Path, help="an existing run to fine-tune (default: train one)")
    parser.add_argument("--base-budget", type=float, default=300.0, help="seconds to train the base")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process's one run
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.base, args.budget, args.out)))
        return

    from machine import describe

    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    base = args.base or train_base(work / "base-runs", args.base_budget)
    # Tokenise the new text once, before any side runs: a cache miss would spend the first
    # side's budget on data preparation.
    from engine.data.sources import load_documents
    from engine.data.token_store import prepare_token_store

    data = side_config("full", base, args.budget, work).data
    prepare_token_store(load_documents(data), data)
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    for round_index in range(args.rounds):
        order = SIDES if round_index % 2 == 0 else SIDES[::-1]
        for side in order:
            out = work / f"round{round_index}"
            child = subprocess.run(
                [sys.executable, __file__, "--side", side, "--base", str(base), "--budget", str(args.budget),
                 "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
            if child.returncode:
                raise SystemExit(f"round {round_index + 1} {side} failed:\n{child.stderr[-3000:]}")
            results[side].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {side}: {results[side][-1]}", file=sys.stderr)

    print(describe())
    print(f"base {base}; fine-tune on python-docs, {args.budget:g} s per side, median of {args.rounds} rounds\n")
    print("| fine-tune | trainable | step time | peak memory | checkpoint | val bpb after "
          f"{args.budget:g} s | steps |")
    print("|---|---|---|---|---|---|---|")
    labels = {"lora": "LoRA r=8, attn + mlp", "full": "full fine-tune"}
    for side in SIDES:
        rows = results[side]

        def med(key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print(f"| {labels[side]} | {rows[0]['trainable']:,} of {rows[0]['params']:,} | {med('step_s') * 1000:.0f} ms "
              f"| {med('peak_bytes') / 2**20:,.0f} MiB | {med('checkpoint_bytes') / 2**20:,.2f} MiB "
              f"| {med('val_bpb'):.4f} | {med('steps'):.0f} |")


if __name__ == "__main__":
    main()
