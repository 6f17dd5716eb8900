"""Opening a trained run: its model at a checkpoint (eval mode) and its tokenizer.

Generation, both exports and `eval` start here, so a run folder is read one way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import RunConfig
from engine.data.tokenizer import TextTokenizer, load_pretrained_tokenizer
from engine.model.builder import build_model
from engine.model.transformer import Transformer
from engine.runs.checkpoint import load_checkpoint, load_latest
from engine.runs.run_dir import existing_run_dir, run_config
from engine.train.init_from import load_model_weights


@dataclass
class LoadedRun:
    """A run's model (eval mode) and tokenizer, ready to sample from."""

    run_dir: Path
    model: Transformer
    tokenizer: TextTokenizer
    step: int
    config: RunConfig | None = None


def load_run(run_dir: Path, checkpoint: Path | None = None, device: str = "cpu") -> LoadedRun:
    """The model of `run_dir` at its latest checkpoint (or `checkpoint`), with its tokenizer."""
    run_dir = existing_run_dir(run_dir)
    config = run_config(run_dir)
    loaded = load_checkpoint(checkpoint, device) if checkpoint else load_latest(run_dir, device)
    # A LoRA run samples from its base plus adapters (the base read from the checkpoint it references).
    model = build_model(config.model, device, lora=config.lora)
    load_model_weights(model, config, loaded)
    model.eval()
    return LoadedRun(run_dir, model, load_pretrained_tokenizer(str(run_dir / "tokenizer")), loaded.state.step,
                     config)
