"""Tokenizers: a byte-level BPE trained on the corpus, raw bytes, or anything AutoTokenizer loads.

All three end up as one `TextTokenizer` backed by a `transformers.PreTrainedTokenizerFast`,
saved into the run directory so `AutoTokenizer.from_pretrained(RUN_DIR / "tokenizer")` loads
exactly what training used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.errors import UserFacingError

EOS = "<|endoftext|>"
BYTES_VOCAB_SIZE = 257  # 256 byte values + EOS


class TokenizerError(UserFacingError):
    """A tokenizer that cannot be built or loaded; the message says what to do instead."""


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with `vocab_size` tokens (EOS included) learned from `texts`.

    Byte-level means every string encodes (no unknown token) and decodes back exactly.
    With vocab_size 257 and no texts it is the plain byte tokenizer.
    """
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False keeps code exact: a leading space is a real character there.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batched(texts), trainer=trainer)
    return tokenizer


def _batched(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class TextTokenizer:
    """What the engine needs from a tokenizer: batch encode, decode, EOS, size, save."""

    hf: Any  # transformers.PreTrainedTokenizerBase
    kind: str  # "bpe", "bytes" or the path / hub id it was loaded from

    @property
    def vocab_size(self) -> int:
        """Token ids the model must cover (added special tokens included)."""
        return len(self.hf)

    @property
    def eos_id(self) -> int:
        return int(self.hf.eos_token_id)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is not None:
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the tokenizer where AutoTokenizer.from_pretrained(directory) loads it."""
        directory = Path(directory)
        self.hf.save_pretrained(directory)
        return directory


def _wrap(tokenizer: Tokenizer, kind: str) -> TextTokenizer:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=EOS)
    return TextTokenizer(hf, kind)


def build_tokenizer(spec: str, texts: Iterable[str], vocab_size: int) -> TextTokenizer:
    """The tokenizer a DataConfig asks for: "bpe" (trained on `texts`), "bytes", or a local
    path / hub id loaded with AutoTokenizer (which must define an EOS token)."""
    if spec == "bpe":
        return _wrap(train_bpe(texts, vocab_size), "bpe")
    if spec == "bytes":
        return _wrap(train_bpe([], BYTES_VOCAB_SIZE), "bytes")
    return load_pretrained_tokenizer(spec)


def load_pretrained_tokenizer(spec: str) -> TextTokenizer:
    """A tokenizer from a folder or a hub id; offline and not cached is one clear sentence."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(spec).exists() else "hub id"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            " This machine is offline and it is not in the Hugging Face cache;"
            if offline and where == "hub id"
            else ""
        )
        raise TokenizerError(
            f"cannot load tokenizer {spec!r} ({where}).{hint} Use data.tokenizer = \"bpe\" to train "
            f"one on the corpus, \"bytes\", or a folder that holds tokenizer files. ({exc.__class__.__name__})"
        ) from None
    if hf.eos_token_id is None:
        raise TokenizerError(
            f"tokenizer {spec!r} has no end-of-sequence token, which separates documents; "
            "pick one that defines eos_token, or use \"bpe\"."
        )
    return TextTokenizer(hf, spec)
