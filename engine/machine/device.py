"""Where and in what precision a run computes: device, autocast dtype, CPU threads."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ComputeSetup:
    """The resolved choice for one run (recorded in its events)."""

    device: torch.device
    dtype_name: str  # float32 | bfloat16 | float16 (what "auto" became)
    threads: int

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.dtype_name == "float32" else DTYPES[self.dtype_name]

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast is fast here (native bf16 on the GPU, or AVX-512 bf16 / AMX on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_dtype(requested: str, device: torch.device) -> str:
    """What `train.use_dtype` means on `device`; float16 off CUDA is refused by validation."""
    if requested != "auto":
        return requested
    return "bfloat16" if bf16_supported(device) else "float32"


def default_threads() -> int:
    """Torch intra-op threads: one per core, with or without a UI beside training.

    Measured with bench/threads.py on 2 cores (laptop preset, training on its own thread): 2
    threads gave 27.6k tokens/s alone and 27.2k beside a 20 Hz UI stand-in whose p99 tick lag
    stayed 3.7 ms; 1 thread gave 16.6k / 16.1k. Leaving a core to the UI cost 40 % and bought
    nothing it needed. Several ranks on one machine (torchrun sets LOCAL_WORLD_SIZE) share its
    cores: each gets its share, so none oversubscribes the others (two ranks of two threads on
    two cores ran 8x slower than one process, measured with bench/ddp.py).
    """
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (os.cpu_count() or 1) // ranks_here)


def setup_compute(use_dtype: str, threads: int | None = None, device: torch.device | None = None) -> ComputeSetup:
    """Pick device and precision, and set torch's CPU thread count for this process."""
    device = device or default_device()
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return ComputeSetup(device, resolve_dtype(use_dtype, device), threads)


def release_cached_memory(device: torch.device) -> None:
    """Hand the CUDA caching allocator's unused blocks back to the driver (train.clean_cuda_cache):
    slower next allocations, less fragmentation when something else needs the GPU. Nothing to
    do on other devices."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
