"""Sampling text from a trained run: load its latest checkpoint and tokenizer, then generate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.train.checkpoint import CheckpointError, load_checkpoint, load_latest
from engine.config import ConfigError, RunConfig, load_config
from engine.data.tokenizer import TextTokenizer, load_pretrained_tokenizer
from engine.model.builder import build_model
from engine.model.transformer import Transformer
from engine.train.init_from import load_model_weights


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = 0.95
    seed: int | None = None


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
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.toml in it)")
    try:
        config = load_config(run_dir / "config.toml")
    except ConfigError as exc:
        raise CheckpointError(f"{run_dir}/config.toml: {exc}") from None
    loaded = load_checkpoint(checkpoint, device) if checkpoint else load_latest(run_dir, device)
    # A LoRA run samples from its base plus adapters (the base read from the checkpoint it references).
    model = build_model(config.model, device, lora=config.lora)
    load_model_weights(model, config, loaded)
    model.eval()
    return LoadedRun(run_dir, model, load_pretrained_tokenizer(str(run_dir / "tokenizer")), loaded.state.step,
                     config)


def generate_text(
    run: LoadedRun,
    prompt: str,
    settings: SamplingSettings,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """The prompt's continuation (without the prompt). `on_text` receives the text decoded so
    far after each token, for streaming; generation stops at EOS."""
    ids = run.tokenizer.encode_batch([prompt])[0] if prompt else []
    if not ids:
        ids = [run.tokenizer.eos_id]  # an empty prompt starts a fresh document
    context = run.model.config.context_len
    idx = torch.tensor([ids[-context:]], dtype=torch.long, device=run.model.embed_tokens.weight.device)
    new_ids: list[int] = []

    def stream(token: torch.Tensor) -> None:
        new_ids.append(int(token[0]))
        if on_text is not None:
            on_text(run.tokenizer.decode(_until_eos(new_ids, run.tokenizer.eos_id)))

    run.model.generate(
        idx, settings.max_new_tokens, temperature=settings.temperature, top_k=settings.top_k,
        top_p=settings.top_p, eos_id=run.tokenizer.eos_id, seed=settings.seed, on_token=stream,
    )
    return run.tokenizer.decode(_until_eos(new_ids, run.tokenizer.eos_id))


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids
