"""One line naming the machine a benchmark ran on, to be quoted beside its figures.

Figures on the 2-core machines differ by CPU (one had native bf16, another did not; see
docs/benchmarks/), so every figure says which CPU, whether it has native bf16, torch's
version and threads, and the date.
"""

from __future__ import annotations

import datetime
import platform


def cpu_model_name() -> str:
    """The CPU's model name as lscpu / /proc/cpuinfo give it ("unknown" where neither says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    import torch

    from engine.machine.device import bf16_supported

    bf16 = "native bf16" if bf16_supported(torch.device("cpu")) else "no native bf16"
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return (f"machine: {cpu_model_name()} ({bf16}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {today} UTC")
