"""What the comparison screen costs: opening 5 runs x 10,000 reports, and redrawing them.

Writes synthetic run directories (config.toml and events.jsonl: step reports every step, an
evaluation every 100) into a temporary folder, then, in the app (run_test, headless-rendered,
the size given):
- open: from pushing the comparison screen until every run is read and the first full draw is
  done (target: under 1 s);
- redraw: the screen's redraw (plot decimated per run, table) forced N times, median and p95
  (target: well under the 250 ms between redraws at 4 Hz, so the UI is never held);
- lag: while one run keeps growing (a live run appending 40 reports a second), how late a
  50 ms sleep on the app's event loop wakes (p50, p99, max): what a keypress would see.

    python bench/compare_ui.py [--runs 5] [--reports 10000] [--size 120x40] [--rounds 3]

Prints the CPU, Python, Textual and the figures of each round, then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_preset, save_config  # noqa: E402
from engine.runs.events import EvalResult, RunFinished, RunStarted, StepMetrics  # noqa: E402
from engine.runs.run_dir import EventLog  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_run(run_dir: Path, reports: int, index: int, finish: bool = True) -> None:
    config = load_preset("tiny")
    config = dataclasses.replace(config, name=run_dir.name,
                                 train=dataclasses.replace(config.train, learning_rate=1e-3 * (index + 1)))
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.toml")
    log = EventLog(run_dir)
    log.write(RunStarted(run_dir=str(run_dir), params=1_600_000, total_steps=reports, tokens_per_step=2048))
    for step in range(1, reports + 1):
        loss = 2 + 3 * math.exp(-step * (1 + index / 4) / 2000) + 0.05 * math.sin(step)
        log.write(StepMetrics(step=step, epoch=step / reports, loss=loss, lr=1e-3, grad_norm=1.0,
                              tokens_per_s=5000.0 + index, mfu=0.1, ram_mb=600.0, elapsed_s=step * 0.03,
                              run_dir=str(run_dir)))
        if step % 100 == 0:
            log.write(EvalResult(step=step, val_loss=loss, val_bpb=loss / 2.5, perplexity=math.exp(loss),
                                 run_dir=str(run_dir)))
    if finish:
        log.write(RunFinished(status="completed", step=reports, val_loss=loss, val_bpb=loss / 2.5,
                              wall_s=reports * 0.03, run_dir=str(run_dir)))
    log.close()


async def one_round(run_dirs: list[Path], size: tuple[int, int], redraws: int) -> dict:
    from lightlm_tui.app import make_app
    from lightlm_tui.screens.compare import CompareScreen

    app = make_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        started = time.perf_counter()
        screen = CompareScreen(run_dirs)
        app.push_screen(screen)
        while not (app.screen is screen and all(r.train for r in screen.runs)
                   and all(r._offset == (p / "events.jsonl").stat().st_size for r, p in zip(screen.runs, run_dirs))):
            await asyncio.sleep(0.005)
        screen.redraw(force=True)
        await pilot.pause()
        open_s = time.perf_counter() - started
        times = []
        for _ in range(redraws):
            t0 = time.perf_counter()
            screen.redraw(force=True)
            await pilot.pause()  # let the plot render what was set
            times.append(time.perf_counter() - t0)
        # A live run: the last one keeps growing while the screen follows it.
        live = run_dirs[-1]
        log = EventLog(live)
        loop = asyncio.get_running_loop()
        lags = []
        step = screen.runs[-1].train[-1].step
        until = loop.time() + 5.0
        while loop.time() < until:
            for _ in range(2):
                step += 1
                log.write(StepMetrics(step=step, epoch=1.0, loss=2.0, lr=1e-3, grad_norm=1.0, tokens_per_s=5000.0,
                                      mfu=0.1, ram_mb=600.0, elapsed_s=step * 0.03, run_dir=str(live)))
            before = loop.time()
            await asyncio.sleep(0.05)
            lags.append((loop.time() - before - 0.05) * 1000)
        log.close()
    times.sort()
    lags.sort()
    return {"open_s": open_s, "redraw_ms_p50": 1000 * statistics.median(times),
            "redraw_ms_p95": 1000 * times[int(0.95 * (len(times) - 1))],
            "lag_ms_p50": statistics.median(lags), "lag_ms_p99": lags[int(0.99 * (len(lags) - 1))],
            "lag_ms_max": lags[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--size", default="120x40")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redraws", type=int, default=20)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    import textual

    print(f"CPU {cpu_name()}; Python {platform.python_version()}; Textual {textual.__version__}; "
          f"{args.runs} runs x {args.reports:,} reports; screen {args.size}; {time.strftime('%Y-%m-%d')}")
    rounds = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory() as scratch:
            run_dirs = [Path(scratch) / f"run-{i}" for i in range(args.runs)]
            for i, run_dir in enumerate(run_dirs):
                write_run(run_dir, args.reports, i, finish=i < args.runs - 1)
            figures = asyncio.run(one_round(run_dirs, size, args.redraws))
        rounds.append(figures)
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in rounds):.3f}" for k in rounds[0]))


if __name__ == "__main__":
    main()
