"""What this machine offers for training: each check is ok / warn / fail with a sentence.

`probe()` covers Python, torch, CUDA GPUs (name, memory, compute capability, bf16, flash
attention, utilisation through NVML), Apple MPS, the CPU (cores, native bf16), RAM and disk.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    value: str
    sentence: str


@dataclass(frozen=True)
class HardwareReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def worst(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    def to_dict(self) -> dict:
        return {"worst": self.worst, "checks": [asdict(c) for c in self.checks]}


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def probe(runs_dir: str | os.PathLike[str] = "runs") -> HardwareReport:
    """Run every check (a second or so; torch is imported here)."""
    checks = [_python()]
    try:
        import torch
    except ImportError:
        checks.append(Check("torch", FAIL, "missing", "PyTorch is not installed; run pip install torch."))
        return HardwareReport(checks + [_cpu(None), _ram(), _disk(runs_dir)])
    checks.append(_torch(torch))
    checks += _gpus(torch)
    checks += [_cpu(torch), _ram(), _disk(runs_dir)]
    return HardwareReport(checks)


def _python() -> Check:
    version = platform.python_version()
    if sys.version_info >= (3, 11):
        return Check("python", OK, version, f"Python {version}.")
    return Check("python", FAIL, version, "Python 3.11 or newer is needed.")


def _torch(torch) -> Check:
    version = torch.__version__
    major, minor = (int(x) for x in version.split("+")[0].split(".")[:2])
    if (major, minor) >= (2, 5):
        return Check("torch", OK, version, f"PyTorch {version}.")
    return Check("torch", WARN, version, "PyTorch 2.5 or newer is recommended (native GQA attention, RMSNorm).")


def _gpus(torch) -> list[Check]:
    if not torch.cuda.is_available():
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return [Check("gpu", WARN, "Apple MPS", "An Apple GPU (MPS) is present; this version trains on the CPU.")]
        return [Check("gpu", WARN, "none", "No CUDA GPU: training runs on the CPU (fine for tiny and laptop presets).")]
    checks = []
    utilisation = _nvml_utilisation()
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        cc = f"{props.major}.{props.minor}"
        free, total = torch.cuda.mem_get_info(index)
        util = f", {utilisation[index]:.0f} % busy" if index < len(utilisation) else ""
        checks.append(Check(f"gpu {index}", OK, props.name,
                            f"{props.name}: {_gib(total)} ({_gib(free)} free), compute capability {cc}{util}."))
        bf16 = props.major >= 8
        checks.append(Check(f"gpu {index} bf16", OK if bf16 else WARN, "yes" if bf16 else "no",
                            "bfloat16 is native here." if bf16 else
                            "No native bfloat16 (compute capability < 8.0): use float16, which needs GradScaler."))
        flash = props.major >= 8 and torch.backends.cuda.flash_sdp_enabled()
        checks.append(Check(f"gpu {index} flash attention", OK if flash else WARN, "yes" if flash else "no",
                            "Flash attention kernels are available." if flash else
                            "No flash attention (needs compute capability 8.0+): memory-efficient attention is used."))
    return checks


def _nvml_utilisation() -> list[float]:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        return [float(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu)
                for i in range(count)]
    except Exception:
        return []


def _cpu(torch) -> Check:
    cores = os.cpu_count() or 1
    bf16 = False
    if torch is not None:
        from engine.machine.device import bf16_supported

        bf16 = bf16_supported(torch.device("cpu"))
    precision = "native bfloat16 (AVX-512 BF16 / AMX)" if bf16 else "no native bfloat16: float32 is used"
    status = OK if cores >= 2 else WARN
    return Check("cpu", status, f"{cores} cores", f"{cores} CPU cores, {precision}.")


def _ram() -> Check:
    memory = psutil.virtual_memory()
    status = OK if memory.available >= 4 * 2**30 else WARN if memory.available >= 1 * 2**30 else FAIL
    return Check("ram", status, _gib(memory.total),
                 f"{_gib(memory.available)} of {_gib(memory.total)} RAM available.")


def _disk(runs_dir: str | os.PathLike[str]) -> Check:
    path = Path(runs_dir).expanduser().resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    status = OK if free >= 2 * 2**30 else WARN if free >= 200 * 2**20 else FAIL
    advice = "" if status == OK else " Checkpoints need room: free some space or set train.runs_dir elsewhere."
    return Check("disk", status, _gib(free), f"{_gib(free)} free for runs at {path}.{advice}")
