"""What the app costs a training run: tokens/s headless vs with the Monitor on screen.

The same `laptop`-preset run (shortened) trains headless (Trainer alone) and inside the app
(run_test, headless-rendered, Monitor redrawing at 4 Hz), interleaved round by round. While
the app runs, a probe coroutine on its event loop sleeps 50 ms at a time and records how late
it wakes: the lag a keypress would see. Targets: tokens/s ratio >= 0.95, lag p99 < 50 ms.

    python bench/ui_overhead.py [--steps 150] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from engine.config import load_preset
from engine.events import StepMetrics
from engine.trainer import Trainer
from lightlm_tui.app import make_app


def shortened(steps: int, runs_dir: str):
    config = load_preset("laptop")
    return dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_steps=steps, eval_interval=0, checkpoint_every_steps=0, checkpoint_every_minutes=0.0,
        use_epoch_checkpoints=False, log_interval=10, runs_dir=runs_dir))


def headless(steps: int, scratch: str, index: int) -> float:
    speeds = []
    Trainer(shortened(steps, scratch), Path(scratch) / f"headless-{index}",
            lambda e: speeds.append(e.tokens_per_s) if isinstance(e, StepMetrics) else None).run()
    return statistics.median(speeds[1:])  # the first window includes warm-up


async def with_app(steps: int, scratch: str) -> tuple[float, list[float]]:
    app = make_app()
    lags: list[float] = []
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.start_run(shortened(steps, scratch))
        loop = asyncio.get_running_loop()
        while monitor.view.finished is None:
            before = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - before - 0.05)
        await pilot.pause()
        # Every step event went to events.jsonl; the screen saw a thinned stream.
        speeds = [e.tokens_per_s for e in _step_events(Path(monitor.view.run_dir))]
    return statistics.median(speeds[1:]), lags


def _step_events(run_dir: Path):
    from engine.run_dir import read_events

    return [e for e in read_events(run_dir) if isinstance(e, StepMetrics)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    alone, in_app, all_lags = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            alone.append(headless(args.steps, scratch, index))
            speed, lags = asyncio.run(with_app(args.steps, scratch))
            in_app.append(speed)
            all_lags.extend(lags)
    all_lags.sort()
    p50, p99 = all_lags[len(all_lags) // 2], all_lags[int(len(all_lags) * 0.99)]
    print(f"laptop preset, {args.steps} steps, median of {args.rounds} interleaved rounds")
    print(f"headless     {statistics.median(alone):>8,.0f} tokens/s")
    print(f"with the app {statistics.median(in_app):>8,.0f} tokens/s   ratio {statistics.median(in_app) / statistics.median(alone):.3f}")
    print(f"event-loop lag while training: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {all_lags[-1] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
