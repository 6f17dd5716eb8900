"""Measure what training achieves on this machine: FLOP/s by model width, and memory.

A few real optimizer steps (forward, cross-entropy, backward, and the optimizer and precision
runs will use) of models 4 layers deep at a few widths, on random tokens, warm-up excluded.
Speed depends mostly on width (how well the matmuls use the cores), so sizing interpolates
between the measured widths. Memory: how much the process really grows for the widest model,
against `engine.estimates.training_memory`, gives a factor the plan's memory prediction uses.

The result is cached per machine, torch version, device, precision, thread count and
optimizer, so only the first plan on a machine pays for it (a few seconds on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.config import ModelConfig, TrainConfig
from engine.model.estimates import flops_per_token, training_memory
from engine.machine.paths import cache_dir
from engine.planner.shapes import Shape

CALIBRATION_VERSION = 3  # 2: keyed by optimizer; 2048 tokens per CPU step. 3: the trainer's step (clipping)
CPU_WIDTHS = (64, 128, 256)
GPU_WIDTHS = (256, 512, 1024)
# Batch 8 x 256 on a CPU: it runs as many tokens/s as 16 x 256 on 2 cores and gives twice the
# updates, which won at 5 minutes (with AdamW 1.38 against 1.45 bits/byte; with Muon 1.20
# against 1.21); 4 x 256 lost a third of the speed and with it the lead (1.28).
CPU_TOKENS_PER_STEP = 2048
GPU_TOKENS_PER_STEP = 65536
CALIBRATION_LAYERS = 4


@dataclass(frozen=True)
class Calibration:
    """Measured on one machine; `flops_at(dims)` is training FLOP/s for a model that wide."""

    key: str
    device: str  # cpu | cuda
    device_name: str
    dtype: str
    threads: int
    optimizer: str
    tokens_per_step: int
    widths: tuple[int, ...]
    flops_per_s: tuple[float, ...]
    base_rss_mb: float  # the process before any model: torch, data libraries
    memory_factor: float  # measured training memory / estimated
    seconds: float  # what measuring took
    from_cache: bool = False

    def flops_at(self, dims: int) -> float:
        """Log-log interpolation between measured widths; flat beyond them (never optimistic)."""
        points = list(zip(self.widths, self.flops_per_s))
        if dims <= points[0][0]:
            return points[0][1]
        if dims >= points[-1][0]:
            return points[-1][1]
        for (w0, f0), (w1, f1) in zip(points, points[1:]):
            if w0 <= dims <= w1:
                share = math.log(dims / w0) / math.log(w1 / w0)
                return math.exp(math.log(f0) + share * (math.log(f1) - math.log(f0)))
        return points[-1][1]


def machine_key(device_name: str, dtype: str, threads: int, optimizer: str) -> str:
    """What a calibration is valid for: this CPU / GPU, torch version, precision, threads, optimizer."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    identity = [CALIBRATION_VERSION, cpu, os.cpu_count(), device_name, torch.__version__, dtype, threads, optimizer]
    return hashlib.sha1(json.dumps(identity).encode()).hexdigest()[:16]


def calibration_path(key: str) -> Path:
    return cache_dir() / "calibration" / f"{key}.json"


def calibrate(threads: int | None = None, max_seconds: float = 20.0, use_cache: bool = True,
              widths: tuple[int, ...] | None = None, use_dtype: str = "auto",
              optimizer: str = "adamw") -> Calibration:
    """This machine's calibration in `use_dtype` (a train.use_dtype value) with `optimizer`
    (a train.optimizer value): from the cache when measured before, else measured now within
    about `max_seconds`."""
    import torch

    from engine.machine.device import setup_compute
    from engine.machine.perf import process_ram_mb

    compute = setup_compute(use_dtype, threads)
    device_name = torch.cuda.get_device_name(compute.device) if compute.device.type == "cuda" else "cpu"
    key = machine_key(device_name, compute.dtype_name, compute.threads, optimizer)
    path = calibration_path(key)
    if use_cache and widths is None and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            stored.update(widths=tuple(stored["widths"]), flops_per_s=tuple(stored["flops_per_s"]), from_cache=True)
            return Calibration(**stored)
        except (ValueError, TypeError, KeyError):
            pass  # an old or damaged cache file: measure again
    started = time.perf_counter()
    cuda = compute.device.type == "cuda"
    widths = widths or (GPU_WIDTHS if cuda else CPU_WIDTHS)
    tokens_per_step = GPU_TOKENS_PER_STEP if cuda else CPU_TOKENS_PER_STEP
    base_rss_mb = process_ram_mb()
    measured_widths, speeds, memory_factor = [], [], 1.0
    for index, width in enumerate(widths):
        share = max_seconds / len(widths)
        try:
            speed, factor = _measure(Shape(width, CALIBRATION_LAYERS), tokens_per_step, compute, share,
                                     base_rss_mb, optimizer)
        except torch.OutOfMemoryError:  # a small GPU: the widths measured so far will do
            torch.cuda.empty_cache()
            break
        measured_widths.append(width)
        speeds.append(speed)
        memory_factor = factor  # the widest measured model's is the most reliable
        if time.perf_counter() - started > max_seconds * (index + 1.5) / len(widths):
            break  # slower than planned: stop at what is measured
    if not speeds:
        raise RuntimeError(f"could not time even a {widths[0]}-wide model on {device_name}: out of memory")
    calibration = Calibration(
        key=key, device=compute.device.type, device_name=device_name, dtype=compute.dtype_name,
        threads=compute.threads, optimizer=optimizer, tokens_per_step=tokens_per_step, widths=tuple(measured_widths),
        flops_per_s=tuple(speeds), base_rss_mb=base_rss_mb, memory_factor=memory_factor,
        seconds=time.perf_counter() - started,
    )
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({k: v for k, v in asdict(calibration).items() if k != "from_cache"}))
        os.replace(temporary, path)
    return calibration


def _measure(shape: Shape, tokens_per_step: int, compute, seconds: float, base_rss_mb: float,
             optimizer_name: str) -> tuple[float, float]:
    """(training FLOP/s, measured / estimated memory) for `shape`, timing steps for about `seconds`."""
    import torch

    from engine.config import RunConfig
    from engine.data.loader import StepBatch
    from engine.model.builder import build_model
    from engine.train.optimizers import build_optimizer
    from engine.train.step import TrainStep

    model_config = shape.model_config(ModelConfig())
    seq = shape.seq_len
    batch = max(1, tokens_per_step // seq)
    train = dataclasses.replace(TrainConfig(), batch_size=batch, max_seq_len=seq, use_dtype=compute.dtype_name,
                                optimizer=optimizer_name)
    model = build_model(model_config, compute.device, seed=0)
    optimizer = build_optimizer(model, RunConfig(model=model_config, train=train), compute.device)
    # The trainer's own step: autocast, loss scaling, clipping and the optimizer, as training runs them.
    train_step = TrainStep(model, optimizer, compute, train.grad_clip)
    window = torch.randint(0, model_config.vocab_size, (batch, seq + 1), device=compute.device)
    windows = StepBatch(0, window[:, :-1], window[:, 1:])
    cuda = compute.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(compute.device)

    def step() -> None:
        train_step(windows, train.learning_rate)

    step()  # warm-up: first-call allocations and kernel selection
    if cuda:
        torch.cuda.synchronize(compute.device)
    timed, started = 0, time.perf_counter()
    while timed < 2 or (time.perf_counter() - started < seconds * 0.6 and timed < 20):
        step()
        timed += 1
    if cuda:
        torch.cuda.synchronize(compute.device)
    elapsed = time.perf_counter() - started
    speed = flops_per_token(model_config, seq) * batch * seq * timed / elapsed
    estimate = training_memory(model_config, train, device_type=compute.device.type).total
    if cuda:
        measured = torch.cuda.max_memory_allocated(compute.device)
    else:
        measured = max(0.0, _peak_rss_mb() - base_rss_mb) * 2**20
    return speed, (measured / estimate if measured > 0 else 1.0)


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024
