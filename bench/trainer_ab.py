"""The whole trainer, this tree against another commit: tokens/s of `lightlm-tui train`.

Each side trains the same preset for the same steps in a fresh process (its own checkout, so
the other side's code is really the other commit's), headless, into a scratch folder; the
figure is the median tokens/s of its step reports, the first report (warm-up) left out. The
sides alternate round by round so the shared machine's drift hits both alike. It answers
"did a change to the loop cost speed?", which a model-only benchmark (bench/throughput.py)
cannot.

    python bench/trainer_ab.py --ref HEAD~1 [--preset laptop] [--steps 120] [--rounds 3] [--nproc 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def tokens_per_s(tree: Path, preset: str, steps: int, scratch: Path, extra: list[str]) -> float:
    run_dir = scratch / f"run-{len(list(scratch.iterdir()))}"
    command = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))",
               "train", "--preset", preset, "--run-dir", str(run_dir), "--set", f"train.max_steps={steps}",
               "--set", "train.eval_interval=0", "--set", "train.checkpoint_every_steps=0", *extra]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    speeds = [event["tokens_per_s"] for event in map(json.loads, (run_dir / "events.jsonl").open())
              if event["type"] == "step"]
    return statistics.median(speeds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="the commit to compare against (e.g. HEAD~1)")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--nproc", type=int, default=1, help="processes per side (DDP under torchrun when > 1)")
    args = parser.parse_args()
    extra = [item for override in args.overrides for item in ("--set", override)]
    if args.nproc > 1:
        extra += ["--nproc", str(args.nproc)]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        other = scratch / "other-tree"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(other), args.ref],
                       check=True, capture_output=True)
        runs = scratch / "runs"
        runs.mkdir()
        try:
            figures: dict[str, list[float]] = {"this tree": [], args.ref: []}
            for round_index in range(args.rounds):
                for name, tree in (("this tree", HERE), (args.ref, other)):
                    figures[name].append(tokens_per_s(tree, args.preset, args.steps, runs, extra))
                print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in figures.items()),
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(other)], check=False)
    mine, theirs = (statistics.median(v) for v in figures.values())
    print(f"median tokens/s: this tree {mine:,.0f}, {args.ref} {theirs:,.0f}; ratio {mine / theirs:.3f} "
          f"({args.preset}, {args.steps} steps, {args.rounds} rounds, {args.nproc} process(es) each)")


if __name__ == "__main__":
    main()
