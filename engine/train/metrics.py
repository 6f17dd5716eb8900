"""One metrics report: a window's figures with speed, memory and the time left, as a StepMetrics event."""

from __future__ import annotations

from engine.machine.perf import cuda_memory_mb, process_ram_mb
from engine.model.moe import expert_load_fields
from engine.runs.checkpoint import TrainState
from engine.runs.events import StepMetrics
from engine.train.budget_clock import BudgetClock
from engine.train.distributed import Distributed
from engine.train.report_window import WindowFigures
from engine.train.setup import RunParts


def step_metrics(figures: WindowFigures, seconds: float, lr: float, parts: RunParts, state: TrainState,
                 budget: BudgetClock | None, place: Distributed) -> StepMetrics:
    """The report of a window of `figures.steps` steps that trained for `seconds`. Every rank
    calls it (the memory figures are a collective)."""
    c, device = parts.config, parts.compute.device
    tokens_per_s = figures.steps * c.train.tokens_per_step / max(seconds, 1e-9)
    step_s = seconds / max(1, figures.steps)
    # The reported and plotted loss is the cross-entropy, comparable with val_loss; an
    # auxiliary balancing loss is reported on its own.
    aux = figures.loss - figures.ce_loss if c.model.use_moe and not c.model.use_lossfreebalance else None
    # The largest memory of any rank: the one that would run out first.
    ram, vram, vram_reserved, vram_peak = place.max_floats([process_ram_mb(), *cuda_memory_mb(device)], device)
    if budget is not None:
        eta_s, progress = budget.remaining_s(), budget.progress()
    else:
        eta_s, progress = (parts.total_steps - state.step) * step_s, state.step / parts.total_steps
    return StepMetrics(
        step=state.step, epoch=state.epoch, loss=figures.ce_loss, lr=lr, grad_norm=figures.grad_norm,
        tokens_per_s=tokens_per_s, mfu=tokens_per_s * parts.flops_per_token / parts.peak_flops,
        ram_mb=ram, vram_mb=vram, vram_reserved_mb=vram_reserved, vram_peak_mb=vram_peak,
        gpu_util=parts.gpu.percent(), eta_s=eta_s, elapsed_s=state.elapsed_s, progress=progress,
        aux_loss=aux, **expert_load_fields(figures.extra),
    )
