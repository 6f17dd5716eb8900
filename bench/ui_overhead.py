"""What the app costs a training run: tokens/s headless vs with the Monitor on screen.

The same `laptop`-preset run (shortened) trains headless (Trainer alone) and inside the app
(run_test, headless-rendered, Monitor redrawing at 4 Hz), interleaved round by round. While
the app runs, a probe coroutine on its event loop sleeps 50 ms at a time and records how late
it wakes: the lag a keypress would see; and it reads the CPU time the app's own (UI) thread
used while the run trained, as a share of the wall time: on 2 cores each millisecond of it is
roughly one the torch threads wait, and unlike tokens/s it barely moves with the machine's
noise. Targets: tokens/s ratio >= 0.95, lag p99 < 50 ms.

`--dtype float32` trains as a CPU without native bf16 does (an Intel Xeon's `auto`), on any
machine.

Each side runs in its own fresh process, as a user would run it. Running both in one process
measures something else: once the main thread has used torch, its OpenMP worker stays
registered, a second thread's team then oversubscribes the 2 cores and libgomp stops
spin-waiting, which made the engine thread ~25 % slower (the app's main thread never touches
torch, so the real app does not pay this).

    python bench/ui_overhead.py [--steps 150] [--rounds 3] [--dtype auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.config import load_preset
from engine.runs.events import StepMetrics
from engine.train.trainer import Trainer
from lightlm_tui.app import make_app


def shortened(steps: int, runs_dir: str, dtype: str = "auto"):
    config = load_preset("laptop")
    return dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_steps=steps, eval_interval=0, checkpoint_every_steps=0, checkpoint_every_minutes=0.0,
        use_epoch_checkpoints=False, log_interval=10, runs_dir=runs_dir, use_dtype=dtype))


def headless(steps: int, scratch: str, index: int, dtype: str = "auto") -> float:
    speeds = []
    Trainer(shortened(steps, scratch, dtype), Path(scratch) / f"headless-{index}",
            lambda e: speeds.append(e.tokens_per_s) if isinstance(e, StepMetrics) else None).run()
    return statistics.median(speeds[1:])  # the first window includes warm-up


async def with_app(steps: int, scratch: str, dtype: str = "auto") -> tuple[float, list[float], float]:
    """(median tokens/s, event-loop lags, the UI thread's CPU share while training)."""
    app = make_app()
    lags: list[float] = []
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.start_run(shortened(steps, scratch, dtype))
        loop = asyncio.get_running_loop()
        started_cpu = started_wall = None
        while monitor.view.finished is None:
            if started_cpu is None and monitor.view.last is not None:  # from the first step report on
                started_cpu, started_wall = time.thread_time(), time.perf_counter()
            before = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - before - 0.05)
        ui_share = (time.thread_time() - started_cpu) / (time.perf_counter() - started_wall)
        await pilot.pause()
        # Every step event went to events.jsonl; the screen saw a thinned stream.
        speeds = [e.tokens_per_s for e in _step_events(Path(monitor.view.run_dir))]
    return statistics.median(speeds[1:]), lags, ui_share


def _step_events(run_dir: Path):
    from engine.runs.run_dir import read_events

    return [e for e in read_events(run_dir) if isinstance(e, StepMetrics)]


def one_side(side: str, steps: int, dtype: str) -> dict:
    """Run one side in this process and return its figures."""
    with tempfile.TemporaryDirectory() as scratch:
        if side == "headless":
            return {"tokens_per_s": headless(steps, scratch, 0, dtype)}
        speed, lags, ui_share = asyncio.run(with_app(steps, scratch, dtype))
        return {"tokens_per_s": speed, "lags": lags, "ui_share": ui_share}


def in_fresh_process(side: str, steps: int, dtype: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(steps), "--dtype", dtype],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--side", choices=["headless", "app"], help=argparse.SUPPRESS)  # a child's job
    args = parser.parse_args()
    if args.side:
        print(json.dumps(one_side(args.side, args.steps, args.dtype)))
        return
    alone, in_app, all_lags, ui_shares = [], [], [], []
    for _ in range(args.rounds):
        alone.append(in_fresh_process("headless", args.steps, args.dtype)["tokens_per_s"])
        app_side = in_fresh_process("app", args.steps, args.dtype)
        in_app.append(app_side["tokens_per_s"])
        all_lags.extend(app_side["lags"])
        ui_shares.append(app_side["ui_share"])
        print(f"round: headless {alone[-1]:,.0f}  app {in_app[-1]:,.0f} tokens/s, UI thread "
              f"{ui_shares[-1]:.1%} of the time", flush=True)
    all_lags.sort()
    p50, p99 = all_lags[len(all_lags) // 2], all_lags[int(len(all_lags) * 0.99)]
    print(f"laptop preset ({args.dtype}), {args.steps} steps, median of {args.rounds} interleaved rounds, "
          "each side a fresh process")
    print(f"headless     {statistics.median(alone):>8,.0f} tokens/s")
    print(f"with the app {statistics.median(in_app):>8,.0f} tokens/s   "
          f"ratio {statistics.median(in_app) / statistics.median(alone):.3f}")
    print(f"the app's UI thread used {statistics.median(ui_shares):.1%} of the wall time (CPU) while training")
    print(f"event-loop lag while training: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
          f"max {all_lags[-1] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
