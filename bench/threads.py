"""How many torch threads should training use, alone and with a UI beside it?

For each torch intra-op thread count, trains the `laptop` preset's model on random tokens
(the trainer's own step: forward, backward, clipping, the preset's optimizer, bf16 autocast
where supported) in an engine thread, alone and with a stand-in UI in the main thread: a
20 Hz timer doing ~2 ms of Python work per tick, as a Textual app redrawing a monitor would.
Prints median tokens/s and the UI's tick lag (p50 / p99). The configurations are
interleaved round by round.

    python bench/threads.py [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch

from engine.config import load_preset
from engine.data.loader import StepBatch
from engine.machine.device import setup_compute
from engine.model.builder import build_model
from engine.train.optimizers import build_optimizer
from engine.train.step import TrainStep


def ui_ticker(stop: threading.Event, lags: list[float], hz: float = 20.0, work_s: float = 0.002) -> None:
    period = 1.0 / hz
    next_tick = time.perf_counter() + period
    while not stop.is_set():
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        lags.append(max(0.0, time.perf_counter() - next_tick))
        end = time.perf_counter() + work_s
        while time.perf_counter() < end:  # pure-Python work holds the GIL, like rendering
            pass
        next_tick += period


def train_for(seconds: float, threads: int, with_ui: bool) -> tuple[float, list[float]]:
    result: dict[str, float] = {}

    def engine() -> None:
        # Everything torch does happens on this thread, as in the app: a main thread that has
        # run torch ops keeps an OpenMP worker that oversubscribes the cores (bench/ui_overhead.py).
        config = load_preset("laptop")
        t = config.train
        compute = setup_compute(t.use_dtype, threads, torch.device("cpu"))
        model = build_model(config.model, compute.device, seed=0)
        # The trainer's own step (autocast, clipping, the configured optimizer).
        train_step = TrainStep(model, build_optimizer(model, config, compute.device), compute, t.grad_clip)
        window = torch.randint(0, config.model.vocab_size, (t.batch_size, t.max_seq_len + 1))
        batch = StepBatch(0, window[:, :-1], window[:, 1:])

        def step() -> None:
            train_step(batch, t.learning_rate)

        for _ in range(2):
            step()  # warm-up
        start, tokens = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            step()
            tokens += batch.inputs.numel()
        result["tokens_per_s"] = tokens / (time.perf_counter() - start)

    lags: list[float] = []
    stop = threading.Event()
    worker = threading.Thread(target=engine)
    worker.start()
    if with_ui:
        ticker = threading.Thread(target=ui_ticker, args=(stop, lags))
        ticker.start()
    worker.join()
    stop.set()
    if with_ui:
        ticker.join()
    return result["tokens_per_s"], lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    cells = [(n, ui) for n in sorted({1, max(1, cores - 1), cores}) for ui in (False, True)]
    speeds: dict = {cell: [] for cell in cells}
    lags: dict = {cell: [] for cell in cells}
    for _ in range(args.rounds):
        for cell in cells:
            tokens_per_s, cell_lags = train_for(args.seconds, *cell)
            speeds[cell].append(tokens_per_s)
            lags[cell].extend(cell_lags)
    print(f"laptop preset model, {cores} cores, median of {args.rounds} rounds x {args.seconds:.0f} s")
    print(f"{'threads':>7} {'UI':<4}{'tokens/s':>10}{'UI lag p50':>12}{'UI lag p99':>12}")
    for cell in cells:
        threads, ui = cell
        lag = sorted(lags[cell])
        p50 = f"{lag[len(lag) // 2] * 1e3:.1f} ms" if lag else "-"
        p99 = f"{lag[int(len(lag) * 0.99)] * 1e3:.1f} ms" if lag else "-"
        print(f"{threads:>7} {'yes' if ui else 'no':<4}{statistics.median(speeds[cell]):>10,.0f}{p50:>12}{p99:>12}")


if __name__ == "__main__":
    main()
