import os

# Tests never reach a hub: anything that tries must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dataclasses

import pytest

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory):
    """One token cache for the whole session, so each corpus is tokenised once."""
    return str(tmp_path_factory.mktemp("token-cache"))


def make_tiny_run_config(token_cache: str, default_runs_dir: str, **train_overrides) -> RunConfig:
    """A model and run small enough to train for real in a couple of seconds (fp32: exact)."""
    train = dict(
        max_steps=30, max_seq_len=32, batch_size=4, learning_rate=3e-3, use_dtype="float32",
        log_interval=1, eval_interval=10, eval_batches=2, checkpoint_every_steps=0,
        checkpoint_every_minutes=0.0, use_epoch_checkpoints=False, runs_dir=default_runs_dir, seed=7,
    )
    train.update(train_overrides)
    return RunConfig(
        name="t",
        model=ModelConfig(vocab_size=512, num_dims=64, num_heads=4, num_kv_heads=2, num_layers=2,
                          ffn_hidden_dims=128, context_len=64),
        train=TrainConfig(**train),
        data=DataConfig(source="python-docs", tokenizer_vocab_size=512, val_fraction=0.05, cache_dir=token_cache),
    )


@pytest.fixture()
def tiny_run_config(token_cache, tmp_path):
    """make_tiny_run_config(**train_overrides), runs under this test's tmp_path."""

    def make(**train_overrides) -> RunConfig:
        return make_tiny_run_config(token_cache, str(tmp_path / "runs"), **train_overrides)

    return make


def replace_train(config: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
