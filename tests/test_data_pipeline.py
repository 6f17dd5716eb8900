"""Sources, the cached token store, and the loader's shifted, reproducible windows."""

import json

import numpy as np
import pytest
import torch

from engine.config import DataConfig
from engine.data.loader import BatchLoader, eval_starts, make_batch, step_window_starts
from engine.data.sources import DataSourceError, load_documents
from engine.data.token_store import prepare_token_store, validation_indices

CODE = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" * (3 + i % 5) for i in range(40)]


@pytest.fixture()
def text_folder(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(CODE):
        (folder / f"doc{i:02d}.txt").write_text(text)
    return folder


def config(source, **kwargs) -> DataConfig:
    return DataConfig(source=str(source), **{"tokenizer_vocab_size": 300, "val_fraction": 0.1, **kwargs})


def test_embedded_corpus_loads_offline():
    dataset = load_documents(DataConfig(source="python-docs", subset_size=10))
    assert len(dataset) == 10 and dataset.column_names == ["text"]


def test_folder_of_text_files_is_one_document_per_file(text_folder):
    dataset = load_documents(config(text_folder))
    assert sorted(dataset["text"]) == sorted(CODE)


def test_jsonl_with_text_field_and_missing_column(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(CODE)))
    assert load_documents(config(path, text_field="body"))["text"] == CODE
    with pytest.raises(DataSourceError) as caught:
        load_documents(config(path))
    assert "data.text_field = 'text'" in str(caught.value) and "its columns are body, id" in str(caught.value)


def test_bad_sources_get_one_sentence(tmp_path):
    with pytest.raises(DataSourceError, match="no such file or folder"):
        load_documents(config(tmp_path / "missing.txt"))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("text\ny\n")
    with pytest.raises(DataSourceError, match="mixes formats"):
        load_documents(config(tmp_path))


def test_offline_hub_dataset_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError) as caught:
        load_documents(DataConfig(source="wikitext", hub_config="wikitext-2-raw-v1"))
    message = str(caught.value)
    assert "cannot load hub dataset 'wikitext' (wikitext-2-raw-v1)" in message
    assert "offline" in message and "python-stdlib" in message


def test_validation_split_is_by_document():
    held_out = validation_indices(100, 0.05)
    assert len(held_out) == 5 and held_out[0] == 0 and held_out[-1] == 99
    assert len(validation_indices(3, 0.001)) == 1 and len(validation_indices(2, 0.9)) == 1


def test_token_store_tokenises_once_and_reopens_from_cache(text_folder, tmp_path):
    data = config(text_folder, cache_dir=str(tmp_path / "cache"))
    dataset = load_documents(data)
    first = prepare_token_store(dataset, data)
    second = prepare_token_store(dataset, data)
    assert not first.from_cache and second.from_cache
    assert first.train.dtype == np.uint16 and np.array_equal(first.train, second.train)
    assert first.meta.val_documents == 4 and first.meta.train_documents == 36
    # Documents are joined with EOS and decode back to the original text.
    eos = first.tokenizer.eos_id
    assert int((np.asarray(first.train) == eos).sum()) == 36
    pieces = first.tokenizer.decode(np.asarray(first.train).tolist()).split("<|endoftext|>")
    assert sorted(pieces[:-1]) == sorted(t for i, t in enumerate(dataset["text"]) if i not in {0, 13, 26, 39})
    # A different vocabulary is a different cache entry.
    other = prepare_token_store(dataset, config(text_folder, cache_dir=str(tmp_path / "cache"),
                                                tokenizer_vocab_size=280))
    assert other.directory != first.directory and not other.from_cache


def test_targets_are_the_inputs_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    inputs, targets = make_batch(tokens, np.array([0, 10, 500]), seq_len=16)
    assert inputs.shape == targets.shape == (3, 16) and inputs.dtype == torch.int64
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    assert torch.equal(targets[:, -1], inputs[:, -1] + 1)
    assert not torch.equal(inputs, targets)  # upstream LightLM's bug: labels = inputs


def test_windows_are_a_pure_function_of_seed_and_step():
    tokens = np.arange(50_000, dtype=np.uint16)
    with BatchLoader(tokens, windows_per_step=8, seq_len=32, seed=3) as loader:
        from_start = [next(loader) for _ in range(5)]  # steps 0..4
    with BatchLoader(tokens, windows_per_step=8, seq_len=32, seed=3, start_step=3) as loader:
        resumed = [next(loader) for _ in range(2)]  # steps 3..4
    for a, b in zip(from_start[3:], resumed):
        assert a.step == b.step and torch.equal(a.inputs, b.inputs)
    assert [b.step for b in from_start] == [0, 1, 2, 3, 4]
    assert not torch.equal(from_start[0].inputs, from_start[1].inputs)
    other_seed = step_window_starts(4, 0, 4, len(tokens), 32)
    assert not np.array_equal(other_seed, step_window_starts(3, 0, 4, len(tokens), 32))


def test_ranks_take_disjoint_slices_of_the_same_step_windows():
    tokens = np.arange(50_000, dtype=np.uint16)
    with BatchLoader(tokens, windows_per_step=8, seq_len=32, seed=3) as whole:
        one_process = next(whole)
    shares = []
    for rank in range(2):
        with BatchLoader(tokens, windows_per_step=8, seq_len=32, seed=3, rank=rank, world_size=2) as loader:
            shares.append(next(loader))
    assert [s.windows for s in shares] == [4, 4]
    assert torch.equal(torch.cat([s.inputs for s in shares]), one_process.inputs)
    with pytest.raises(ValueError, match="do not split evenly"):
        BatchLoader(tokens, windows_per_step=8, seq_len=32, seed=3, rank=0, world_size=3)


def test_order_version_1_reproduces_the_old_per_micro_batch_draws():
    # What the loader drew before 2026-11-26, written out: one generator per micro-batch.
    old = np.concatenate([np.random.default_rng([5, 11, micro, 0]).integers(0, 10_000 - 16, size=4)
                          for micro in range(3)])
    assert np.array_equal(step_window_starts(5, 11, 12, 10_000, 16, order_version=1, micro_batch_size=4), old)
    assert not np.array_equal(step_window_starts(5, 11, 12, 10_000, 16), old)


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one window"):
        BatchLoader(np.arange(10, dtype=np.uint16), windows_per_step=2, seq_len=32, seed=0)
    with pytest.raises(ValueError, match="raise data.val_fraction"):
        eval_starts(10, 32, 4)


def test_one_large_text_file_is_cut_into_documents_at_blank_lines(tmp_path):
    """tinyshakespeare's shape: one input.txt. It trains (held-out text and all), and its
    documents join back into exactly the file."""
    from engine.data.text_files import DOCUMENT_CHARACTERS

    speeches = [f"SPEAKER {i}:\n" + f"line {i} of the speech, with words enough to fill it.\n" * (5 + i % 9)
                for i in range(2500)]
    text = "\n".join(speeches)
    book = tmp_path / "input.txt"
    book.write_text(text)
    dataset = load_documents(DataConfig(source=str(book)))
    documents = dataset["text"]
    assert len(documents) >= len(text) // (2 * DOCUMENT_CHARACTERS)
    assert "".join(documents) == text
    assert all(doc.endswith("\n\n") for doc in documents[:-1])  # cut at blank lines
    assert max(map(len, documents)) < DOCUMENT_CHARACTERS + 1000
    store = prepare_token_store(dataset, DataConfig(source=str(book), tokenizer_vocab_size=300,
                                                    cache_dir=str(tmp_path / "cache")))
    assert store.meta.val_documents >= 1 and store.meta.train_documents > store.meta.val_documents


def test_text_without_blank_lines_is_still_capped(tmp_path):
    from engine.data.text_files import file_documents

    path = tmp_path / "one-line.txt"
    path.write_text("x" * 2500 + "\n" + "y" * 100)
    pieces = list(file_documents(path, target=1000, cap=1000))
    assert "".join(pieces) == path.read_text() and max(map(len, pieces)) <= 1000


def test_a_changed_text_file_is_read_again_and_a_bad_one_is_a_sentence(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first version\n")
    (tmp_path / "other.txt").write_text("another file\n")
    assert load_documents(DataConfig(source=str(tmp_path)))["text"][0] == "first version\n"
    path.write_text("second, longer version\n")
    assert load_documents(DataConfig(source=str(tmp_path)))["text"][0] == "second, longer version\n"
    path.write_bytes(b"caf\xe9 latin-1\n")
    with pytest.raises(DataSourceError, match=r"notes.txt is not UTF-8 text .*convert it to UTF-8"):
        load_documents(DataConfig(source=str(tmp_path)))


def test_a_single_small_file_names_the_fix_that_works(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("just one short document\n")
    with pytest.raises(DataSourceError, match=r"holds 1 document\(s\).*add text \(a text file over 64 kB"):
        load_documents(DataConfig(source=str(path)))
    (tmp_path / "second.txt").write_text("and a second one\n")
    with pytest.raises(DataSourceError, match=r"raise data.subset_size"):
        load_documents(DataConfig(source=str(tmp_path), subset_size=1))
