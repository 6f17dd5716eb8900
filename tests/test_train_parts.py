"""The training loop's parts, each on its own: the decision, the clock, the step, the data order,
the parameter groups the model declares, and what the config hash covers."""

import dataclasses

import pytest
import torch

from engine.config import ModelConfig, RunConfig, TrainConfig
from engine.data.loader import StepBatch
from engine.machine.device import setup_compute
from engine.model.builder import build_model
from engine.model.layers import EMBEDDINGS, HIDDEN_MATRICES, NORMS
from engine.runs.checkpoint import config_hash
from engine.train.clock import CHECKPOINT, EVAL, PAUSE, TrainingClock
from engine.train.decision import Boundary, Decision, RequestInbox, Requests, Schedule, TrainControl, decide
from engine.train.optimizers import build_optimizer
from engine.train.step import TrainStep

SMALL = ModelConfig(vocab_size=64, num_dims=32, num_heads=4, num_kv_heads=2, num_layers=2, ffn_hidden_dims=64,
                    context_len=16)


# ----- the decision -------------------------------------------------------------------------
STEPS = Schedule(total_steps=10, eval_interval=4, checkpoint_every_steps=5)


def boundary(step, **facts):
    return Boundary(step=step, start_step=facts.pop("start_step", 0), **facts)


def test_scheduled_evaluations_and_checkpoints_fire_on_their_steps_and_not_at_the_end():
    decisions = {step: decide(boundary(step), Requests(), STEPS) for step in range(11)}
    assert [s for s, d in decisions.items() if d.evaluate] == [4, 8]
    assert [s for s, d in decisions.items() if d.save] == [5]
    assert decisions[10] == Decision(finished=True)  # the final eval and checkpoint follow the loop
    assert not any(d.finished for s, d in decisions.items() if s < 10)


def test_nothing_scheduled_fires_again_at_the_step_a_session_resumes_from():
    assert decide(boundary(5, start_step=5), Requests(), STEPS) == Decision()
    assert decide(boundary(8, start_step=5), Requests(), STEPS).evaluate


def test_a_sequence_of_requests():
    taken = []
    control = TrainControl()
    inbox = RequestInbox(control)
    sequence = [("save_now", 1), (None, 2), ("eval_now", 3), ("pause", 3), ("stop", 6)]
    for flag, step in sequence:
        if flag:
            getattr(control, flag).set()
        taken.append(decide(boundary(step), inbox.take(), Schedule(total_steps=100)))
    assert taken[0] == Decision(save="requested")
    assert taken[1] == Decision()  # save is one-shot: taking it cleared it
    assert taken[2] == Decision(evaluate=True)
    assert taken[3] == Decision(pause=True)  # pause is a state: it holds until resumed
    assert taken[4] == Decision(pause=False, stop=True)  # stop wins, and ends the pause


def test_revisiting_a_boundary_after_a_pause_counts_only_requests():
    revisit = boundary(4, revisit=True)
    assert decide(revisit, Requests(), STEPS) == Decision()
    assert decide(revisit, Requests(save=True), STEPS) == Decision(save="requested")


def test_a_stop_or_the_end_takes_over_scheduled_and_requested_work():
    assert decide(boundary(4), Requests(stop=True, save=True, eval=True), STEPS) == Decision(stop=True)
    assert decide(boundary(10), Requests(save=True, eval=True), STEPS) == Decision(finished=True)


def test_a_budget_ends_the_run_when_out_of_time():
    budget = Schedule(total_steps=None, eval_interval=4)
    assert decide(boundary(1001), Requests(), budget) == Decision()  # no step count ends it
    assert decide(boundary(1000), Requests(), budget) == Decision(evaluate=True)
    assert decide(boundary(3, out_of_time=True), Requests(), budget) == Decision(finished=True)


def test_epoch_and_time_checkpoints():
    schedule = Schedule(total_steps=100, checkpoint_every_s=60, epoch_checkpoints=True)
    assert decide(boundary(7, epoch=1.01, previous_epoch=0.99), Requests(), schedule).save == "epoch"
    assert decide(boundary(8, epoch=1.1, previous_epoch=1.01), Requests(), schedule).save == ""
    assert decide(boundary(9, since_checkpoint_s=61), Requests(), schedule).save == "interval"


def test_a_decision_survives_its_encoding_for_a_broadcast():
    for decision in (Decision(), Decision(True, "epoch", True, False, False), Decision(stop=True, save="requested"),
                     Decision(finished=True)):
        assert Decision.decode(decision.encode()) == decision


# ----- the clock ----------------------------------------------------------------------------
class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_clock_keeps_excluded_time_out_of_training_time():
    time = FakeTime()
    clock = TrainingClock(time)
    time.now += 10  # training
    with clock.excluded(EVAL):
        time.now += 3
    assert clock.lap() == 10
    time.now += 5
    with clock.excluded(PAUSE):
        time.now += 100
    with clock.excluded(CHECKPOINT):
        time.now += 2
    time.now += 1
    assert clock.since_lap() == 6
    assert clock.lap() == 6 and clock.lap() == 0
    assert clock.training_s() == 16
    assert clock.excluded_s(PAUSE) == 100 and clock.excluded_s() == 105


def test_time_excluded_by_a_block_that_raises_still_counts():
    time = FakeTime()
    clock = TrainingClock(time)
    with pytest.raises(RuntimeError):
        with clock.excluded(EVAL):
            time.now += 4
            raise RuntimeError("evaluation failed")
    assert clock.excluded_s(EVAL) == 4 and clock.training_s() == 0


# ----- the step -----------------------------------------------------------------------------
def make_step(micro_batch_size=None, optimizer="adamw", seed=0):
    compute = setup_compute("float32", threads=1)
    model = build_model(SMALL, compute.device, seed=seed)
    config = RunConfig(model=SMALL, train=TrainConfig(optimizer=optimizer, learning_rate=3e-3))
    step = TrainStep(model, build_optimizer(model, config, compute.device), compute, grad_clip=1.0,
                     micro_batch_size=micro_batch_size)
    return model, step


def windows(count, seed=1):
    """Learnable windows: counting sequences (mod the vocabulary) from random starts."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, SMALL.vocab_size, (count, 1), generator=generator)
    block = (starts + torch.arange(17)) % SMALL.vocab_size
    return StepBatch(0, block[:, :-1], block[:, 1:])


def test_the_step_trains_and_reports_a_finite_result():
    model, step = make_step()
    batch = windows(8)
    first = step(batch, lr=3e-3)
    for _ in range(20):
        last = step(batch, lr=3e-3)
    assert bool(first.finite) and bool(last.finite)
    assert float(last.loss) < float(first.loss) - 0.5
    assert float(first.grad_norm) > 0 and first.windows == 8
    assert float(first.loss) == pytest.approx(float(first.ce_loss))  # no auxiliary loss in a dense model
    assert all(p.grad is None for p in model.parameters())  # gradients zeroed for the next step


def test_the_step_skips_an_update_with_an_injected_inf_and_its_hooks_run_only_after_real_updates():
    model, step = make_step()
    calls = []
    step.after_optimizer_step.append(lambda: calls.append(model.embed_tokens.weight.grad is not None))
    clean = step(windows(4), lr=1e-3)
    with torch.no_grad():
        model.norm.weight[0] = float("inf")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    poisoned = step(windows(4), lr=1e-3)
    assert bool(clean.finite) and not clean.skipped
    assert not bool(poisoned.finite) and poisoned.skipped
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())  # nothing applied
    assert calls == [True]  # after the optimizer step, before the gradients are zeroed; not after a skip
    assert all(p.grad is None for p in model.parameters())


def test_out_of_memory_halves_the_micro_batch_and_retries_the_same_windows():
    from engine.train.faults import FaultPlan

    model, step = make_step(micro_batch_size=8)
    _, reference = make_step(micro_batch_size=2)
    step.faults = FaultPlan(oom_at={1: 2})  # at the first step only 2 windows fit
    result = step(windows(8), lr=3e-3)
    expected = reference(windows(8), lr=3e-3)
    assert result.memory_retries == 2 and step.micro_batch_size == 2
    assert float(result.loss) == pytest.approx(float(expected.loss), rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), reference.model.parameters()))


def test_out_of_memory_at_one_window_is_an_error_the_trainer_can_name():
    from engine.train.faults import FaultPlan
    from engine.train.faults import OutOfMemoryAtOneWindow

    _, step = make_step(micro_batch_size=4)
    step.faults = FaultPlan(oom_at={1: 0})
    with pytest.raises(OutOfMemoryAtOneWindow, match="one window per micro-batch"):
        step(windows(4), lr=1e-3)


def test_the_fault_plan_reads_the_environment_form():
    from engine.train.faults import FaultPlan, is_out_of_memory

    plan = FaultPlan.parse("oom:5:4, nan:7-9")
    assert plan.oom_at == {5: 4} and plan.nan_steps == {7, 8, 9}
    # A rank-bound fault reaches that DDP rank alone.
    assert FaultPlan.parse("oom:3:2@1", rank=1).oom_at == {3: 2}
    assert FaultPlan.parse("oom:3:2@1", rank=0).oom_at == {}
    assert FaultPlan.parse("oom-eval:4:1").eval_oom_at == {4: 1}
    with pytest.raises(ValueError,
                       match=r"use oom:STEP:MAX\[@RANK\], oom-eval:STEP:MAX\[@RANK\], nan:FIRST-LAST or kill:STEP"):
        FaultPlan.parse("boom:1")
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_the_step_sets_the_learning_rate_it_is_given():
    _, step = make_step()
    step(windows(2), lr=1.234e-4)
    assert all(group["lr"] == 1.234e-4 for group in step.optimizer.param_groups)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_micro_batch_size_changes_nothing_but_float_rounding(optimizer):
    """8 windows as 8 x 1, 4 x 2 and 2 x 4: the same gradients, so the same losses over 20 steps."""
    losses = {}
    for micro in (8, 4, 2):
        _, step = make_step(micro_batch_size=micro, optimizer=optimizer)
        losses[micro] = [float(step(windows(8, seed=s), lr=3e-3).loss) for s in range(20)]
    assert losses[8][-1] < losses[8][0] - 0.3  # it really trained
    for micro in (4, 2):
        assert losses[micro] == pytest.approx(losses[8], rel=1e-4, abs=1e-5)


# ----- the model builder and its parameter groups --------------------------------------------
def test_the_model_declares_every_parameter_in_exactly_one_group():
    model = build_model(SMALL, seed=0)
    groups = model.parameter_groups()
    declared = [id(p) for params in groups.values() for p in params]
    assert len(declared) == len(set(declared)) == len(list(model.parameters()))
    assert groups[EMBEDDINGS] == [model.embed_tokens.weight]
    assert all(p.dim() == 1 for p in groups[NORMS]) and all(p.dim() == 2 for p in groups[HIDDEN_MATRICES])
    assert len(groups[HIDDEN_MATRICES]) == 7 * SMALL.num_layers


def test_build_model_is_a_function_of_its_seed():
    a, b, c = build_model(SMALL, seed=3), build_model(SMALL, seed=3), build_model(SMALL, seed=4)
    assert torch.equal(a.embed_tokens.weight, b.embed_tokens.weight)
    assert not torch.equal(a.embed_tokens.weight, c.embed_tokens.weight)


def test_the_optimizer_refuses_a_parameter_no_group_declares():
    model = build_model(SMALL, seed=0)
    model.stray = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="no parameter group for stray"):
        build_optimizer(model, RunConfig(model=SMALL), torch.device("cpu"))


def test_weight_decay_follows_the_declared_groups():
    model = build_model(SMALL, seed=0)
    optimizer = build_optimizer(model, RunConfig(model=SMALL, train=TrainConfig(weight_decay=0.1)), torch.device("cpu"))
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.embed_tokens.weight) in decay and id(model.layers[0].mlp.up_proj.weight) in decay
    assert id(model.norm.weight) not in decay


# ----- settings ------------------------------------------------------------------------------
def test_the_retired_use_ddp_setting_loads_when_off_and_says_what_replaced_it_when_on():
    from engine.config import ConfigError, loads_config

    assert loads_config("[train]\nuse_ddp = false\n") == RunConfig()  # as old run folders hold it
    with pytest.raises(ConfigError, match="train.use_ddp = True: DDP is on whenever a run has several processes"):
        loads_config("[train]\nuse_ddp = true\n")


def test_the_config_hash_covers_the_model_and_data_order_only():
    base = RunConfig()

    def with_train(**changes):
        return dataclasses.replace(base, train=dataclasses.replace(base.train, **changes))

    same = [with_train(log_interval=1), with_train(eval_interval=7), with_train(checkpoint_every_steps=3),
            with_train(learning_rate=1e-4), with_train(batch_size=4, accumulation_steps=2),
            dataclasses.replace(base, data=dataclasses.replace(base.data, cache_dir="/elsewhere"))]
    assert all(config_hash(c) == config_hash(base) for c in same)
    different = [with_train(seed=1), with_train(max_seq_len=128), with_train(batch_size=16),
                 dataclasses.replace(base, model=dataclasses.replace(base.model, num_layers=2)),
                 dataclasses.replace(base, data=dataclasses.replace(base.data, source="python-docs"))]
    assert all(config_hash(c) != config_hash(base) for c in different)
