"""Sampling text from a trained run (opened with engine.runs.trained_run.load_run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.runs.trained_run import LoadedRun


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = 0.95
    seed: int | None = None


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
