"""Tokens go to disk a batch at a time: memory stays flat, ids past uint16 are kept exactly (or
refused, never wrapped), and every long phase says how far it is."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data.sources import load_documents
from engine.data.token_store import prepare_token_store
from engine.data.token_writer import TokenRangeError, token_dtype, write_token_file
from engine.data.tokenizer import load_pretrained_tokenizer
from engine.runs.events import DataProgress

WIDE_VOCAB = 70_000  # past uint16's 65,536 ids


@pytest.fixture(scope="module")
def wide_tokenizer_dir(tmp_path_factory) -> Path:
    """A real tokenizer of 70,001 tokens (one per word w0 ... w69999, and EOS), saved the way
    transformers saves one, so AutoTokenizer loads it like any hub tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(WIDE_VOCAB)} | {"<eos>": WIDE_VOCAB, "<unk>": WIDE_VOCAB + 1}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("wide-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    return folder


def test_a_vocabulary_past_uint16_is_stored_as_uint32_and_every_id_survives(wide_tokenizer_dir, tmp_path):
    corpus = tmp_path / "words.jsonl"
    rows = [" ".join(f"w{(97 * d + 7 * k) % WIDE_VOCAB}" for k in range(50)) for d in range(30)]
    corpus.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    data = DataConfig(source=str(corpus), tokenizer=str(wide_tokenizer_dir), val_fraction=0.1,
                      cache_dir=str(tmp_path / "cache"))
    store = prepare_token_store(load_documents(data), data)
    assert store.meta.dtype == "uint32" and store.train.dtype == np.uint32
    ids = np.concatenate([np.asarray(store.train), np.asarray(store.val)])
    assert ids.max() >= 2**16  # the wide ids are really there
    eos = store.tokenizer.eos_id
    documents = [row.split() for row in store.tokenizer.decode(ids.tolist()).split("<eos>") if row.strip()]
    assert sorted(" ".join(d) for d in documents) == sorted(rows)  # decoded exactly, not wrapped
    assert int((ids == eos).sum()) == len(rows)


def test_an_id_the_dtype_cannot_hold_is_refused_not_wrapped(wide_tokenizer_dir, tmp_path):
    tokenizer = load_pretrained_tokenizer(str(wide_tokenizer_dir))
    assert token_dtype(tokenizer.vocab_size) == np.uint32 and token_dtype(2**16) == np.uint16
    with pytest.raises(TokenRangeError, match="token id 70000, which uint16 cannot hold"):  # EOS, the largest
        write_token_file(["w1 w69999"], tokenizer, tmp_path / "out.bin", np.dtype(np.uint16))


def test_preparation_reports_each_phase_and_counts_every_document(tmp_path):
    data = DataConfig(source="python-docs", tokenizer_vocab_size=300, val_fraction=0.05,
                      cache_dir=str(tmp_path / "cache"))
    dataset = load_documents(data)
    heard: list[DataProgress] = []
    store = prepare_token_store(dataset, data, on_progress=heard.append)
    assert heard[0].phase == "training the tokenizer" and heard[0].fraction is None
    tokenising = [e for e in heard if e.phase == "tokenising"]
    assert tokenising and tokenising[-1].documents_done == tokenising[-1].documents_total == len(dataset)
    assert tokenising[-1].tokens_done == store.meta.train_tokens + store.meta.val_tokens
    done = [e.documents_done for e in tokenising]
    assert done == sorted(done)  # one count over both splits, never going back
    assert prepare_token_store(dataset, data, on_progress=heard.append).from_cache
    assert len(heard) == len([e for e in heard if e.phase]) and heard[-1] is tokenising[-1]  # a reopen is silent


def test_the_cli_and_the_monitor_say_how_far_preparation_is():
    from engine.cli.progress import ProgressPrinter
    from lightlm_tui.run_view import RunView
    from lightlm_tui.screens.monitor import preparing_text

    out = io.StringIO()
    printer = ProgressPrinter(out, is_tty=False)
    for done in (0, 10, 20, 55, 56, 100):
        printer(DataProgress("tokenising", done, 100, done * 10**6, done * 300, elapsed_s=1 + done / 10))
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # 55 and 56 are the same tenth: one line
    assert lines[-1].startswith("Preparing data: tokenising 100/100 documents (100 %, 100.0 MB")
    view = RunView()
    view.apply(DataProgress("tokenising", 25, 100, 25 * 10**6, 0, elapsed_s=5.0))
    assert preparing_text(view.preparing) == ("preparing data: tokenising 25 % of 100 documents "
                                              "(5.0 MB/s, about 0m15s left)")


MEMORY_PROBE = """
import json, resource, sys
from datasets import Dataset
from engine.config import DataConfig
from engine.data.token_store import prepare_token_store
from engine.data.tokenizer import build_tokenizer

build_tokenizer("bytes", [], 0)  # imports transformers (and torch) before the baseline is taken
paragraph = "".join(chr(0x61 + (i * 7) % 26) for i in range(1000)) + "\\n"
dataset = Dataset.from_dict({"text": [paragraph * 64] * int(sys.argv[1])})  # 64 kB documents
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = prepare_token_store(dataset, DataConfig(source="memory", tokenizer="bytes", cache_dir=sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tokens": store.meta.train_tokens + store.meta.val_tokens, "growth_mb": (after - before) / 1024}))
"""


def test_memory_stays_flat_as_the_corpus_grows(tmp_path):
    """Peak memory beyond the corpus itself: about the same for 16 MB and 64 MB of text, and far
    under what the old in-memory map took (8 bytes a token and more: measured 1.28 GB and 1.84 GB
    here against 0.39 GB and 0.26 GB now)."""
    growth = {}
    for documents in (256, 1024):
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(documents), str(tmp_path / f"c{documents}")],
                                capture_output=True, text=True, timeout=600, check=True)
        figures = json.loads(result.stdout.splitlines()[-1])
        assert figures["tokens"] == documents * 64_065  # every byte a token, plus each EOS
        growth[documents] = figures["growth_mb"]
    assert growth[1024] < growth[256] + 64 and max(growth.values()) < 768, growth
