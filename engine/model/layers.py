"""The layers and names the dense and the mixture-of-experts blocks share: the parameter kinds a
model declares (the optimizer groups by them), the activations, the norm, and the gated
feed-forward. transformer.py and moe.py both build on this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig

# The kinds of parameter the model declares (see Transformer.parameter_groups).
HIDDEN_MATRICES, EMBEDDINGS, NORMS = "hidden_matrices", "embeddings", "norms"
ROUTERS = "routers"  # mixture-of-experts routers: no weight decay, never Muon
ADAPTERS = "adapters"  # LoRA A and B (engine/model/lora.py): no weight decay, never Muon

ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def build_norm(config: ModelConfig) -> nn.Module:
    """The normalisation layer the config asks for (both have one `weight`, no bias)."""
    if config.norm_type == "layernorm":
        return nn.LayerNorm(config.num_dims, eps=config.rmsnorm_eps, bias=False)
    return nn.RMSNorm(config.num_dims, eps=config.rmsnorm_eps)


class FeedForward(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)); SwiGLU with the default silu."""

    def __init__(self, config: ModelConfig, hidden_dims: int | None = None) -> None:
        super().__init__()
        c, f = config.num_dims, hidden_dims or config.ffn_hidden_dims
        self.gate_proj = nn.Linear(c, f, bias=False)
        self.up_proj = nn.Linear(c, f, bias=False)
        self.down_proj = nn.Linear(f, c, bias=False)
        self.act = ACTIVATIONS[config.activation_fn]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output and an auxiliary loss (None: a dense layer has nothing to balance)."""
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x)), None
