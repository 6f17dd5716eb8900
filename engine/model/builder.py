"""The one way a model is built: for training, generation, export and the planner's calibration."""

from __future__ import annotations

import torch

from engine.config import ModelConfig
from engine.model.transformer import Transformer


def build_model(
    config: ModelConfig,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    gradient_checkpointing: bool = False,
) -> Transformer:
    """A freshly initialised model on `device`. With `seed`, the initial weights are a function
    of it alone (the global torch RNG is seeded first, as training always did); weights loaded
    afterwards (a checkpoint, an export) replace them."""
    if seed is not None:
        torch.manual_seed(seed)
    model = Transformer(config).to(device)
    model.gradient_checkpointing = gradient_checkpointing
    return model
