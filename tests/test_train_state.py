"""state.json: the run's notes as typed fields under a format version, and checkpoints from before it.

tests/fixtures/state_format_1.json is a state.json as the code before the version wrote it
(format 1: no version, the notes in an `extra` dict holding only the keys the run had set), at
step 6 of the run `faulty_run` trains: its micro-batch halved twice at step 2, step 4 skipped for
a NaN loss, and evaluated at step 6.
"""

import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.runs.checkpoint import (
    STATE_VERSION,
    CheckpointError,
    RunNotes,
    TrainState,
    load_checkpoint,
    save_checkpoint,
    state_from_record,
)
from test_trainer import train

FORMAT_1 = Path(__file__).parent / "fixtures" / "state_format_1.json"
FAULTS = "oom:2:2,nan:4"  # out of memory above 2 windows at step 2; a NaN loss at step 4
NOTES_AT_STEP_6 = RunNotes(data_order=2, micro_batch_size=2, memory_retries=2, skipped_steps=1, eval_step=6)


def faulty_run(tiny_run_config, monkeypatch):
    monkeypatch.setenv("LIGHTLM_FAULTS", FAULTS)
    return tiny_run_config(max_steps=12, eval_interval=3, batch_size=8)


def as_format_1(record: dict) -> dict:
    """A format-2 state.json rewritten as the code before the version wrote it: no version, and
    an `extra` dict with the data order (always written) and the notes that differ from a fresh
    run's (each was written when it first changed). Nothing else changes: the checksums in it
    are of the other files, which stay as they are."""
    fresh = asdict(RunNotes())
    extra = {k: v for k, v in record["notes"].items() if k == "data_order" or v != fresh[k]}
    return {**{k: v for k, v in record.items() if k not in ("version", "notes")}, "extra": extra}


def test_a_checkpoint_written_before_the_format_version_resumes_exactly(tiny_run_config, tmp_path, monkeypatch):
    config = faulty_run(tiny_run_config, monkeypatch)
    straight, _, _ = train(config, tmp_path / "straight")
    first, stopped, _ = train(config, tmp_path / "resumed", stop_after=6)
    assert stopped.status == "stopped" and stopped.step == 6

    state_path = tmp_path / "resumed" / "checkpoints" / "step_000006" / "state.json"
    old = as_format_1(json.loads(state_path.read_text()))
    # The rewrite is what the code before wrote at this step of this run: the same fields, the same notes.
    written_before = json.loads(FORMAT_1.read_text())
    assert old.keys() == written_before.keys() and old["sha256"].keys() == written_before["sha256"].keys()
    assert old["extra"] == written_before["extra"]
    assert (old["step"], old["tokens_seen"]) == (written_before["step"], written_before["tokens_seen"])
    old["extra"]["a_retired_note"] = 1  # a key no format knows is dropped, not an error
    state_path.write_text(json.dumps(old, indent=2))

    second, finished, _ = train(config, tmp_path / "resumed", resume=True)
    assert finished.status == "completed" and finished.step == 12, finished.message
    assert second.train_step.micro_batch_size == 2  # the old notes were read, not defaulted
    assert first.losses + second.losses == straight.losses  # exact floats, step by step
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_000012" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_000012" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # From then on the run writes the current format, its notes carried on.
    later, uninterrupted = (json.loads((tmp_path / run / "checkpoints" / "step_000012" / "state.json").read_text())
                            for run in ("resumed", "straight"))
    assert later["version"] == STATE_VERSION and "extra" not in later and later["notes"] == uninterrupted["notes"]


def test_format_1_notes_read_as_written_and_an_unversioned_data_order_is_order_1():
    record = json.loads(FORMAT_1.read_text())
    del record["sha256"]
    state = state_from_record(record, version=1)
    assert (state.step, state.tokens_seen, state.notes) == (6, 1536, NOTES_AT_STEP_6)
    # Checkpoints from before the step-keyed data order have no data_order: they drew order 1.
    del record["extra"]["data_order"]
    record["extra"]["a_retired_note"] = 1
    assert state_from_record(record, version=1).notes == RunNotes(**{**asdict(NOTES_AT_STEP_6), "data_order": 1})


def test_state_json_carries_its_version_and_round_trips(tiny_run_config, tmp_path):
    model = torch.nn.Linear(2, 2)
    notes = RunNotes(
        data_order=1, micro_batch_size=2, eval_micro_batch_size=1, memory_retries=3, skipped_steps=4, rolled_back=True,
        lr_scale=0.25, eval_step=10, budget_used_s=1 / 3, budget_progress=0.1 + 0.2,
        grad_scaler={"scale": 1234.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                     "_growth_tracker": 7},
        base={"checkpoint": "/runs/base/checkpoints/step_000100", "sha256": "ab" * 32},
    )
    state = TrainState(step=12, epoch=0.3, tokens_seen=1536, elapsed_s=2 / 3, config_hash="0123456789abcdef",
                       val_loss=5.5, val_bpb=4.25, best_val_loss=5.25, notes=notes)
    path = save_checkpoint(tmp_path / "run", "step_000012", model, torch.optim.SGD(model.parameters(), lr=0.1),
                           state, tiny_run_config())
    record = json.loads((path / "state.json").read_text())
    assert record["version"] == STATE_VERSION == 2
    assert record["notes"].keys() == {f.name for f in fields(RunNotes)}  # every note, by name
    assert load_checkpoint(path).state == state
    assert TrainState().notes == RunNotes() and RunNotes().data_order == 2  # a fresh run draws the current order


def test_a_state_json_from_a_newer_version_is_refused_with_a_sentence(tiny_run_config, tmp_path):
    config = tiny_run_config(max_steps=2, eval_interval=0)
    train(config, tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "step_000002"
    record = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**record, "version": STATE_VERSION + 1}))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"checkpoint {path} was written by a newer lightlm-tui (state.json format {STATE_VERSION + 1}; this version "
        f"reads formats up to {STATE_VERSION}); update lightlm-tui to resume or load it")
    _, finished, _ = train(config, tmp_path / "run", resume=True)
    assert finished.status == "failed" and str(caught.value) in finished.message

    (path / "state.json").write_text(json.dumps({**record, "version": "2"}))
    with pytest.raises(CheckpointError, match="state.json is damaged"):
        load_checkpoint(path)
