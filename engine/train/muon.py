"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

Muon (K. Jordan et al., 2024) keeps a Nesterov momentum of each matrix's gradient and steps
along its orthogonalised form: the matrix with the same singular vectors and every singular
value near 1, so rare directions of the gradient move as far as the dominant ones. The
orthogonalisation is five Newton-Schulz iterations of the odd quintic
X <- aX + (bA + cA^2)X with A = XX^T, whose coefficients (3.4445, -4.7750, 2.0315) pull
singular values from (0, 1] into roughly [0.7, 1.2] as fast as possible; that is accurate
enough for an update and needs only matrix products, which run in bfloat16.

The update is scaled by 0.2 * sqrt(max(rows, cols)), which gives it the RMS (about 0.2) of a
typical AdamW update (J. Liu et al., "Muon is scalable for LLM training", 2025). So one learning
rate and one weight decay serve both kinds of parameters, and a config tuned for AdamW is a
sane starting point. Embeddings (and the tied output head), norm gains and vectors stay with
AdamW: they are not linear maps between hidden states.

Matrices of the same shape are orthogonalised together as one batch (one per kind of
projection across all layers), which keeps the small products efficient on a CPU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5
MUON_MOMENTUM = 0.95
ADAMW_MATCHED_RMS = 0.2


def orthogonalise(matrices: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
                  steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """Approximately orthogonalise a batch of matrices (..., rows, cols): U V^T of their SVD,
    with singular values left in about [0.7, 1.2]. Returned in `dtype`."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrices.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: X X^T is then the smaller square
        x = x.mT
    # Dividing by the Frobenius norm puts every singular value in (0, 1], where the iteration converges.
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with `muon=True` take Muon steps, the others AdamW steps (PyTorch's AdamW,
    decoupled weight decay). Every group has `lr` and `weight_decay`; the state dict is an
    ordinary optimizer state dict, so checkpoints save and restore it as they do AdamW's."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, momentum: float = MUON_MOMENTUM,
                 orthogonalise_dtype: torch.dtype = torch.bfloat16) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": 0.0, "momentum": momentum,
                    "muon": False}
        super().__init__(list(groups), defaults)
        self.orthogonalise_dtype = orthogonalise_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _muon_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[torch.Size, list[torch.Tensor]] = defaultdict(list)
        for p in params:
            by_shape[p.shape].append(p)
        for shape, same_shape in by_shape.items():
            nesterov = []
            for p in same_shape:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(momentum).add_(p.grad)
                nesterov.append(p.grad.add(buffer, alpha=momentum))
            directions = orthogonalise(torch.stack(nesterov), self.orthogonalise_dtype)
            scale = ADAMW_MATCHED_RMS * math.sqrt(max(shape[-2], shape[-1]))
            for p, direction in zip(same_shape, directions.unbind(0)):
                p.mul_(1 - lr * decay)
                p.add_(direction.to(p.dtype), alpha=-lr * scale)

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = float(state["step"])
            p.mul_(1 - lr * decay)
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denominator = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
            p.addcdiv_(state["exp_avg"], denominator, value=-lr / (1 - beta1**step))
