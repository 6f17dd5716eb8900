"""The configured optimizer, built from the parameter groups the model declares."""

from __future__ import annotations

import torch

from engine.config import RunConfig
from engine.machine.device import bf16_supported
from engine.model.layers import ADAPTERS, EMBEDDINGS, HIDDEN_MATRICES, NORMS, ROUTERS
from engine.train.muon import MuonAdamW


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW or Muon over the model's trainable parameters, weight decay on matrices only.

    The roles come from `model.parameter_groups()`: Muon takes the hidden matrices; the token
    embedding (also the tied output head), the norms and MoE routers stay with AdamW
    (engine/train/muon.py); norms and routers get no weight decay (a router's scale sets how
    sharply it chooses, and decaying it would blur the choice).
    LoRA adapters are AdamW's with no weight decay (peft's and the LoRA paper's setting):
    decay pulls B A towards zero, i.e. towards the base model, at a rate set by lr x decay
    rather than by the data, and shrinks the random A that B reads through; lora.dropout and the
    small rank are the regularisers. They are never Muon's: an orthogonalised update of a rank-r
    factor would give each of its r directions the same step, whatever the data says.
    AdamW uses fused kernels on CUDA. Frozen parameters (requires_grad False) are left out, and
    so are groups left empty (a LoRA run trains adapters alone)."""
    t = config.train
    declared = {kind: [p for p in params if p.requires_grad] for kind, params in model.parameter_groups().items()}
    _check_every_parameter_declared(model, declared)
    if t.optimizer == "muon":
        groups = [
            {"params": declared[HIDDEN_MATRICES], "weight_decay": t.weight_decay, "muon": True},
            {"params": declared[EMBEDDINGS], "weight_decay": t.weight_decay},
            {"params": declared[NORMS] + declared.get(ROUTERS, []) + declared.get(ADAPTERS, []), "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        # Newton-Schulz runs in bfloat16 where the hardware is fast at it, else in float32.
        dtype = torch.bfloat16 if bf16_supported(device) else torch.float32
        return MuonAdamW(groups, lr=t.learning_rate, betas=tuple(t.betas), orthogonalise_dtype=dtype)
    groups = [
        {"params": declared[HIDDEN_MATRICES] + declared[EMBEDDINGS], "weight_decay": t.weight_decay},
        {"params": declared[NORMS] + declared.get(ROUTERS, []) + declared.get(ADAPTERS, []), "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=tuple(t.betas), **extra)


def _check_every_parameter_declared(model: torch.nn.Module, declared: dict[str, list[torch.nn.Parameter]]) -> None:
    """A trainable parameter no group names would silently never train: refuse to start."""
    seen = {id(p) for params in declared.values() for p in params}
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"the model declares no parameter group for {', '.join(missing)}")
