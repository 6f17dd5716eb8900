"""What DDP costs on this machine: the same run as 1 process and as N processes.

Trains a preset headless through the real CLI (`lightlm-tui train --nproc N`), the same global
batch either way, each side in a fresh process tree, the sides alternating round by round;
prints the median tokens/s of each (step reports, the first left out) and their ratio. On a
CPU the processes share its cores: N ranks x (cores / N) threads against 1 process x cores
threads, so the ratio is the price of the gradient all-reduce and of the smaller matmuls.

    python bench/ddp.py [--nproc 2] [--preset laptop] [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def tokens_per_s(nproc: int, preset: str, steps: int, scratch: Path) -> float:
    run_dir = scratch / f"run-{len(list(scratch.iterdir()))}"
    command = [sys.executable, "-m", "engine.cli", "train", "--preset", preset, "--run-dir", str(run_dir),
               "--nproc", str(nproc), "--set", f"train.max_steps={steps}", "--set", "train.eval_interval=0",
               "--set", "train.checkpoint_every_steps=0", "--set", "train.log_interval=5"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    speeds = [e["tokens_per_s"] for e in map(json.loads, (run_dir / "events.jsonl").open()) if e["type"] == "step"]
    return statistics.median(speeds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for round_index in range(args.rounds):
            for nproc in figures:
                figures[nproc].append(tokens_per_s(nproc, args.preset, args.steps, scratch))
            print(f"round {round_index + 1}: " + ", ".join(f"{n} process(es) {v[-1]:,.0f}" for n, v in figures.items()),
                  flush=True)
    one, many = statistics.median(figures[1]), statistics.median(figures[args.nproc])
    print(f"median tokens/s: 1 process {one:,.0f}, {args.nproc} processes {many:,.0f}; ratio {many / one:.3f} "
          f"({args.preset}, {args.steps} steps, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
