"""LoRA: low-rank adapters on a frozen model, merged back into it, and saved the way peft saves them.

A target linear layer y = W x becomes y = W x + s * B A dropout(x), with A (r, in) drawn like
peft's default (Kaiming-uniform, a = sqrt(5)), B (out, r) zero, and s = alpha / r (alpha / sqrt(r)
with rsLoRA). B = 0 makes the adapted model equal to the base until the first step.

The wrapped layer keeps its `weight` under the same name, so a base checkpoint loads into an
adapted model unchanged and only `lora_A` / `lora_B` are new keys. Only the exact projection
paths of the blocks are targets (`layers.N.self_attn.q_proj`, `layers.N.mlp.gate_proj`, ...):
a mixture-of-experts feed-forward has no such paths (its experts are stacked tensors, its
router a bare weight), so its experts, shared experts, router and routing bias stay frozen.

peft's names (peft.tuners.lora.model, as read in peft 0.21): the adapter file holds
`base_model.model.<HF name of the layer>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r];
adapter_config.json carries peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, lora_dropout,
target_modules, use_rslora and base_model_name_or_path.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.schema import ATTN_TARGETS, LORA_TARGETS, MLP_TARGETS, LoraConfig, resolve_lora_targets
from engine.errors import UserFacingError
from engine.model.hf_compat import HF_PREFIX
from engine.model.layers import ADAPTERS, HIDDEN_MATRICES
from engine.model.transformer import Transformer

# The paths that can carry an adapter: a block's attention projections and its dense
# feed-forward's (a MoE feed-forward's shared experts sit one level deeper and do not match).
TARGET_PATH = re.compile(rf"layers\.\d+\.(self_attn\.({'|'.join(ATTN_TARGETS)})|mlp\.({'|'.join(MLP_TARGETS)}))")
PEFT_PREFIX = "base_model.model."


class LoraError(UserFacingError):
    """LoRA cannot be applied as configured; the message says what to change."""


def lora_scaling(lora: LoraConfig) -> float:
    """The factor on B A: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA."""
    return lora.alpha / (math.sqrt(lora.rank) if lora.use_rslora else lora.rank)


class LoraLinear(nn.Linear):
    """A frozen linear layer plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float,
                 generator: torch.Generator | None = None) -> None:
        # Built on the meta device: its own weight is replaced by the base's at once.
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight = base.weight  # the same tensor: the base's key, values and memory
        self.weight.requires_grad_(False)
        # peft's default A init (init_lora_weights=True): nn.Linear's own, drawn from `generator`
        # so the adapters of a run depend on its seed alone, not on what ran before. Drawn on the
        # CPU (the generator's device, and the same numbers on any device), then moved.
        a = torch.empty(rank, base.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight) + update * self.scaling

    def parameter_kinds(self) -> dict[str, list[nn.Parameter]]:
        """The base weight stays a hidden matrix (frozen); A and B are adapters."""
        return {HIDDEN_MATRICES: [self.weight], ADAPTERS: [self.lora_A, self.lora_B]}

    def merged_weight(self) -> torch.Tensor:
        """W + s B A, computed in float32 whatever the weights' dtype."""
        return self.weight.float() + self.scaling * (self.lora_B.float() @ self.lora_A.float())


def target_paths(model: Transformer, lora: LoraConfig) -> list[str]:
    """The module paths `lora.target_modules` names in `model`; refuses names that match
    nothing, listing the layers the model has."""
    wanted = resolve_lora_targets(lora.target_modules)
    unknown = [n for n in lora.target_modules if n not in LORA_TARGETS and n not in ("attn", "mlp", "all-linear")]
    present = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and TARGET_PATH.fullmatch(name)]
    have = sorted({p.rsplit(".", 1)[1] for p in present}, key=LORA_TARGETS.index)
    paths = [p for p in present if p.rsplit(".", 1)[1] in wanted]
    if unknown or not paths:
        names = unknown or list(lora.target_modules)
        what = f"{', '.join(names)} match{'es' if len(names) == 1 else ''} no {'layer' if unknown else 'linear layer'}"
        moe = ("; the mixture-of-experts feed-forwards (experts, shared experts, router) stay frozen"
               if model.config.use_moe else "")
        raise LoraError(f"lora.target_modules: {what}; this model's layers are {', '.join(have)} "
                        f"(or attn, mlp, all-linear){moe}")
    return paths


def apply_lora(model: Transformer, lora: LoraConfig, seed: int = 0) -> list[str]:
    """Freeze every parameter of `model`, then put a LoRA adapter on each target layer in place;
    returns the adapted paths. Refuses a rank above a target's smaller side (the update could
    not have that rank) and target names that match nothing."""
    paths = target_paths(model, lora)
    for name, module in ((p, model.get_submodule(p)) for p in paths):
        if lora.rank > min(module.in_features, module.out_features):
            raise LoraError(f"lora.rank {lora.rank} is larger than {name}'s smaller side "
                            f"({module.out_features} x {module.in_features}); use a rank of at most "
                            f"{min(module.in_features, module.out_features)}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for moe in model.moe_layers():
        # The loss-free routing bias is part of the frozen base too: left moving, the adapted model
        # would drift from the base its peft export names.
        moe.bias_update_rate = 0.0
    generator = torch.Generator().manual_seed(seed)
    scaling = lora_scaling(lora)
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, child, LoraLinear(getattr(parent, child), lora.rank, scaling, lora.dropout, generator))
    model.lora_paths = paths
    return paths


def is_adapted(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLinear) for m in model.modules())


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA run's checkpoint holds instead of a second copy of the base: the adapters, and
    the persistent buffers (a loss-free MoE's routing bias is one; small, and they could move)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v for k, v in model.state_dict().items() if k in trainable or k in buffers}


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every adapter folded into its weight (float32): what
    `build_model(config)` loads to compute the adapted model without adapters."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):
            continue
        state[name] = tensor.float() if tensor.is_floating_point() else tensor
    for path, module in model.named_modules():
        if isinstance(module, LoraLinear):
            state[f"{path}.weight"] = module.merged_weight().detach()
    return state


def peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters under peft's names for the Hugging Face export of the base model."""
    out = {}
    for path, module in model.named_modules():
        if isinstance(module, LoraLinear):
            stem = f"{PEFT_PREFIX}{HF_PREFIX}{path}"
            out[f"{stem}.lora_A.weight"] = module.lora_A.detach().float().contiguous().cpu()
            out[f"{stem}.lora_B.weight"] = module.lora_B.detach().float().contiguous().cpu()
    return out


def peft_adapter_config(lora: LoraConfig, base_model: str, targets: list[str]) -> dict[str, Any]:
    """adapter_config.json for `peft.PeftModel.from_pretrained` (LoRA on a causal LM)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": sorted({p.rsplit(".", 1)[1] for p in targets}, key=LORA_TARGETS.index),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
