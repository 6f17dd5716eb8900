"""Measurements the trainer reports: achievable FLOP/s, process and GPU memory, GPU utilisation."""

from __future__ import annotations

import time
from functools import cache

import psutil
import torch


@cache
def matmul_peak_flops(device_type: str, dtype: torch.dtype, max_size: int = 4096, budget_s: float = 0.05) -> float:
    """Best FLOP/s of a square matmul on this device in `dtype`, measured once per process
    (MFU is reported against it, so MFU means "share of what this machine can do").

    The size doubles from 256 while one matmul takes under `budget_s`, so the measurement
    stays short where a dtype is slow (float16 on a CPU without native support is emulated).
    """
    device = torch.device(device_type)

    def timed(a: torch.Tensor, b: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    best, size = 0.0, 256
    while size <= max_size:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        timed(a, b)  # warm-up
        seconds = min(timed(a, b) for _ in range(3))
        best = max(best, 2 * size**3 / seconds)
        if seconds > budget_s:
            break
        size *= 2
    return best


def process_ram_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def cuda_memory_mb(device: torch.device) -> tuple[float, float, float]:
    """(allocated, reserved by the caching allocator, peak allocated) in MiB on a CUDA device;
    zeros elsewhere."""
    if device.type != "cuda":
        return 0.0, 0.0, 0.0
    mib = 2**20
    return (torch.cuda.memory_allocated(device) / mib, torch.cuda.memory_reserved(device) / mib,
            torch.cuda.max_memory_allocated(device) / mib)


class GpuUtilization:
    """GPU utilisation in percent through NVML (the nvidia-ml-py package), or None without it."""

    def __init__(self, device: torch.device) -> None:
        self._handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        except Exception:  # no driver, no library, a container without NVML: just unknown
            self._handle = None

    def percent(self) -> float | None:
        if self._handle is None:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except Exception:
            return None
