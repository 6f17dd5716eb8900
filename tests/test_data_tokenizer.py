"""Embedded corpora and tokenizers: offline, deterministic, exact round trips, loadable by HF."""

import pytest

from engine.data.embedded import embedded_documents, python_docs_documents, python_stdlib_documents
from engine.data.tokenizer import BYTES_VOCAB_SIZE, EOS, TokenizerError, build_tokenizer, load_pretrained_tokenizer

SAMPLE = 'def grüße(name: str) -> str:\n    """Say hi 👋."""\n    return f"hi {name}\\t!"\n'


@pytest.fixture(scope="module")
def stdlib_docs():
    return python_stdlib_documents()


def test_stdlib_corpus_is_the_standard_library_without_tests(stdlib_docs):
    names = [d.name for d in stdlib_docs]
    assert len(names) > 500 and "os.py" in names and "json/decoder.py" in names
    assert names == sorted(names)
    assert not any(part in {"test", "tests", "idle_test", "site-packages"} for n in names for part in n.split("/")[:-1])
    assert sum(len(d.text) for d in stdlib_docs) > 5_000_000


def test_docs_corpus_is_prose():
    docs = python_docs_documents()
    assert len(docs) > 50 and any("for" == d.name for d in docs)
    assert embedded_documents("python-docs") == docs


def test_bpe_has_the_asked_size_and_round_trips_exactly(stdlib_docs, tmp_path):
    tokenizer = build_tokenizer("bpe", (d.text for d in stdlib_docs[:60]), vocab_size=600)
    assert tokenizer.vocab_size == 600
    ids = tokenizer.encode_batch([SAMPLE])[0]
    assert tokenizer.decode(ids) == SAMPLE
    assert len(ids) < len(SAMPLE.encode())  # merges learned from Python code apply
    assert tokenizer.hf.convert_ids_to_tokens(tokenizer.eos_id) == EOS

    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tokenizer.save(tmp_path / "tokenizer"))
    assert reloaded(SAMPLE, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.eos_token == EOS


def test_bytes_tokenizer_is_one_token_per_byte():
    tokenizer = build_tokenizer("bytes", [], vocab_size=0)
    assert tokenizer.vocab_size == BYTES_VOCAB_SIZE
    ids = tokenizer.encode_batch([SAMPLE])[0]
    assert len(ids) == len(SAMPLE.encode()) and tokenizer.decode(ids) == SAMPLE


def test_missing_pretrained_tokenizer_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError) as caught:
        load_pretrained_tokenizer("no-such-org/no-such-tokenizer")
    message = str(caught.value)
    assert "cannot load tokenizer 'no-such-org/no-such-tokenizer' (hub id)" in message
    assert "offline" in message and 'data.tokenizer = "bpe"' in message
