"""The one way a model is built: for training, generation, export and the planner's calibration."""

from __future__ import annotations

import torch

from engine.config import ModelConfig
from engine.config.schema import LoraConfig
from engine.model.transformer import Transformer


def build_model(
    config: ModelConfig,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    gradient_checkpointing: bool = False,
    lora: LoraConfig | None = None,
) -> Transformer:
    """A freshly initialised model on `device`. With `seed`, the initial weights are a function
    of it alone (the global torch RNG is seeded first, so a run and its resume draw the same weights); weights loaded
    afterwards (a checkpoint, an export) replace them. With an enabled `lora`, every weight is
    frozen and the target layers carry adapters (A drawn from `seed`, B zero); base weights load
    into it under their usual names (engine/model/lora.py)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = Transformer(config).to(device)
    model.gradient_checkpointing = gradient_checkpointing
    if lora is not None and lora.enabled:
        from engine.model.lora import apply_lora

        apply_lora(model, lora, seed=seed or 0)
    return model
