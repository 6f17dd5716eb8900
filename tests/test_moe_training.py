"""Mixture-of-experts runs for real: the loss falls, the step events carry the expert loads,
the reported loss stays the cross-entropy, and resume is bit-exact (routing bias included)."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from engine.runs.events import CheckpointSaved, StepMetrics, event_from_dict
from engine.train.trainer import Trainer, TrainControl


def moe_run(tiny_run_config, loss_free: bool, **train):
    config = tiny_run_config(**train)
    model = dataclasses.replace(config.model, use_moe=True, moe_num_experts=4, moe_active_experts=2,
                                moe_shared_experts=0, use_lossfreebalance=loss_free, moe_bias_update_rate=0.01)
    return dataclasses.replace(config, model=model)


def train(config, run_dir, resume=False, stop_after=None):
    events, control = [], TrainControl()

    def emit(event):
        events.append(event)
        if stop_after is not None and isinstance(event, StepMetrics) and event.step == stop_after:
            control.stop.set()

    trainer = Trainer(config, run_dir, emit, control, resume=resume, threads=1)
    finished = trainer.run()
    assert finished.status in ("completed", "stopped"), finished.message
    return trainer, events


@pytest.mark.parametrize("loss_free", [False, True])
def test_moe_loss_falls_and_step_events_carry_expert_loads(tiny_run_config, tmp_path, loss_free):
    config = moe_run(tiny_run_config, loss_free, max_steps=120, eval_interval=0, log_interval=1)
    trainer, events = train(config, tmp_path / "run")
    assert trainer.losses[0] == pytest.approx(6.24, abs=0.6)  # log(512): an untrained model
    assert sum(trainer.losses[-10:]) / 10 < trainer.losses[0] - 0.8
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert len(steps) == 120
    for event in steps:
        assert len(event.expert_load) == 2 and all(len(layer) == 4 for layer in event.expert_load)
        assert all(sum(layer) == pytest.approx(1.0) for layer in event.expert_load)
        assert len(event.expert_max_violation) == 2 and len(event.expert_dead) == 2
        assert event.loss == pytest.approx(event.loss)  # finite
        again = event_from_dict(json.loads(event.to_json()))  # the event stays JSON
        assert again == event
    if loss_free:
        assert all(e.aux_loss is None for e in steps)
        biases = [layer.mlp.expert_bias for layer in trainer.model.layers]
        assert all(b.abs().sum() > 0 for b in biases)  # the bias moved
    else:
        # The aux loss is reported on its own: about coef x layers when balanced, and the
        # reported loss is the cross-entropy (the trainer's losses are the events' losses).
        assert all(0 < e.aux_loss < 0.01 * 2 * 4 for e in steps)
        assert trainer.losses == [e.loss for e in steps]


@pytest.mark.parametrize("loss_free", [False, True])
def test_moe_resume_is_bit_identical(tiny_run_config, tmp_path, loss_free):
    config = moe_run(tiny_run_config, loss_free, max_steps=16, eval_interval=8, optimizer="muon")
    straight, _ = train(config, tmp_path / "straight")
    first, events = train(config, tmp_path / "resumed", stop_after=8)
    assert any(isinstance(e, CheckpointSaved) and e.reason == "stop" for e in events)
    second, _ = train(config, tmp_path / "resumed", resume=True)
    assert first.losses + second.losses == straight.losses
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_000016" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_000016" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if loss_free:
        assert "layers.0.mlp.expert_bias" in a and a["layers.0.mlp.expert_bias"].abs().sum() > 0


def test_runs_list_shows_total_and_active_parameters(tiny_run_config, tmp_path):
    from engine.runs.run_dir import EventLog, summarize_run
    from lightlm_tui.screens.runs import parameters_cell

    config = moe_run(tiny_run_config, loss_free=True, max_steps=2, eval_interval=0)
    run_dir = tmp_path / "run"
    log = EventLog(run_dir)
    trainer = Trainer(config, run_dir, log.write, threads=1)
    trainer.run()
    log.close()
    summary = summarize_run(run_dir)
    assert summary.params == trainer.model.num_parameters()
    assert summary.active_params == trainer.model.num_active_parameters() < summary.params
    assert parameters_cell(summary).endswith(" active)")
