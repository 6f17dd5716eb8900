"""Every validation rule, with the sentence a user sees."""

import dataclasses

import pytest

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, validate


def run(model=None, train=None, data=None) -> RunConfig:
    return RunConfig(
        model=ModelConfig(**(model or {})),
        train=TrainConfig(**(train or {})),
        data=DataConfig(**(data or {})),
    )


def messages(config, **kwargs) -> dict[str, str]:
    return {p.field: str(p) for p in validate(config, **kwargs)}


def test_defaults_are_valid():
    assert validate(RunConfig(), cuda_available=False) == []


def test_invalid_heads_names_field_value_and_fix():
    found = messages(run(model={"num_dims": 64, "num_heads": 7}))
    assert found["model.num_heads"] == (
        "model.num_heads = 7: num_dims (64) must be divisible by num_heads; try num_heads = 2, 4 or 8."
    )


def test_kv_heads_must_divide_heads():
    found = messages(run(model={"num_heads": 8, "num_kv_heads": 3}))
    assert "num_heads (8) must be divisible by num_kv_heads" in found["model.num_kv_heads"]
    assert "try num_kv_heads = 1, 2 or 4." in found["model.num_kv_heads"]


def test_head_dim_must_be_even_for_rope():
    # 60 dims / 4 heads = 15: divisible, but RoPE rotates pairs.
    found = messages(run(model={"num_dims": 60, "num_heads": 4, "num_kv_heads": 2}))
    assert "head size num_dims / num_heads = 15 must be even" in found["model.num_heads"]


def test_active_experts_at_most_experts():
    config = run(model={"use_moe": True, "moe_num_experts": 4, "moe_active_experts": 5})
    found = messages(config)
    assert "cannot route to more experts than exist (moe_num_experts = 4)" in found["model.moe_active_experts"]


def test_a_sane_moe_config_is_accepted():
    assert messages(run(model={"use_moe": True, "moe_num_experts": 8, "moe_active_experts": 2,
                                "moe_shared_experts": 1})) == {}
    assert messages(run(model={"use_moe": True, "use_lossfreebalance": True})) == {}


def test_loss_free_balancing_with_a_zero_rate_is_refused():
    found = messages(run(model={"use_moe": True, "use_lossfreebalance": True, "moe_bias_update_rate": 0.0}))
    assert "0 never moves it" in found["model.moe_bias_update_rate"]


def test_seq_len_at_most_context():
    found = messages(run(model={"context_len": 128}, train={"max_seq_len": 256}))
    assert "context_len (128)" in found["train.max_seq_len"]


@pytest.mark.parametrize(
    "section, field_name, bad, expected",
    [
        ("model", "num_layers", 0, "must be at least 1."),
        ("model", "num_dims", -64, "must be at least 1."),
        ("model", "dropout", 1.5, "must be at most 0.99."),
        ("model", "rope_theta", 0.0, "must be greater than 0."),
        ("train", "batch_size", 0, "must be at least 1."),
        ("train", "learning_rate", 0.0, "must be greater than 0."),
        ("train", "learning_rate", float("nan"), "must be a finite number."),
        ("train", "warmup_ratio", 1.5, "must be at most 1."),
        ("train", "max_steps", -5, "must be at least 1 (or 0 for run num_epochs)."),
        ("train", "time_budget_s", -1.0, "must be greater than 0 (or 0 for no budget)."),
        ("data", "val_fraction", 0.0, "must be greater than 0."),
        ("data", "tokenizer_vocab_size", 100, "must be at least 260."),
    ],
)
def test_positive_sizes_and_rates(section, field_name, bad, expected):
    overrides = {field_name: bad}
    if (section, field_name) == ("data", "tokenizer_vocab_size"):
        config = run(model={"vocab_size": bad}, data=overrides)
    else:
        config = run(**{section: overrides})
    found = messages(config)
    assert found[f"{section}.{field_name}"] == f"{section}.{field_name} = {bad!r}: {expected}"


def test_zero_switches_off_where_documented():
    config = run(train={"max_steps": 0, "time_budget_s": 0.0, "checkpoint_every_steps": 0, "grad_clip": 0.0})
    assert validate(config) == []


@pytest.mark.parametrize(
    "section, field_name, bad",
    [("train", "use_dtype", "fp8"), ("model", "activation_fn", "swish"), ("model", "norm_type", "batchnorm")],
)
def test_unknown_enum_lists_choices(section, field_name, bad):
    found = messages(run(**{section: {field_name: bad}}))
    assert "must be one of" in found[f"{section}.{field_name}"]


def test_float16_only_with_cuda():
    config = run(train={"use_dtype": "float16"})
    assert "needs a CUDA GPU" in messages(config, cuda_available=False)["train.use_dtype"]
    assert messages(config, cuda_available=True) == {}
    assert messages(config) == {}  # hardware unknown: not judged


def test_betas_in_range():
    found = messages(run(train={"betas": (0.9, 1.0)}))
    assert "two numbers in [0, 1)" in found["train.betas"]


def test_bpe_vocab_must_match_model():
    found = messages(run(model={"vocab_size": 4096}, data={"tokenizer_vocab_size": 8192}))
    assert "data.tokenizer_vocab_size = 8192" in found["model.vocab_size"]
    # Other tokenizers decide their own size (checked when they load, in the data layer).
    assert messages(run(model={"vocab_size": 4096}, data={"tokenizer": "bytes"})) == {}


def test_every_problem_reported_at_once():
    config = run(model={"num_dims": 64, "num_heads": 7, "num_layers": 0}, train={"batch_size": 0})
    assert {"model.num_heads", "model.num_layers", "train.batch_size"} <= set(messages(config))


def test_validation_never_changes_the_config():
    config = run(model={"num_dims": 64, "num_heads": 7})
    before = dataclasses.asdict(config)
    validate(config, cuda_available=False)
    assert dataclasses.asdict(config) == before
