"""What the planner needs to know about the corpus: its size, and which tokenisations are cached."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import DataConfig
from engine.data.token_store import fingerprint
from engine.machine.paths import cache_dir

PLANNED_VOCABS = (4096, 8192, 16384)  # what shapes.py can choose


@dataclass(frozen=True)
class CorpusFacts:
    train_bytes: float  # UTF-8 bytes of the documents training will see
    cached_tokens: dict[int, int]  # vocab size -> training tokens, for tokenisations already cached

    def train_tokens_for(self, vocab: int) -> int | None:
        return self.cached_tokens.get(vocab)

    @property
    def any_cached(self) -> bool:
        """Whether the run will likely find its tokens cached (then no tokenising in the budget)."""
        return bool(self.cached_tokens)


def corpus_facts(documents: Any, data: DataConfig) -> CorpusFacts:
    total = sum(len(text.encode("utf-8", "surrogatepass")) for batch in documents.iter(batch_size=1024)
                for text in batch["text"])
    cached: dict[int, int] = {}
    if data.tokenizer == "bpe":
        root = Path(data.cache_dir).expanduser() if data.cache_dir else cache_dir()
        for vocab in PLANNED_VOCABS:
            meta = (root / "tokens" / fingerprint(documents, dataclasses.replace(data, tokenizer_vocab_size=vocab))
                    / "meta.json")
            if meta.is_file():
                cached[vocab] = json.loads(meta.read_text(encoding="utf-8"))["train_tokens"]
    return CorpusFacts(total * (1 - data.val_fraction), cached)
