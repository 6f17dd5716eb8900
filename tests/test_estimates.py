"""Size estimates against the real model: parameters, and what autograd actually saves."""

import contextlib

import pytest
import torch

from engine.config import ModelConfig, TrainConfig
from engine.model.estimates import activation_bytes, flops_per_token, parameter_count, training_memory
from engine.model.transformer import Transformer


def measured_saved_bytes(model: Transformer, batch: int, seq: int, bf16: bool) -> int:
    """Bytes of distinct storages autograd saves for backward (parameters excluded)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    idx = torch.randint(0, model.config.vocab_size, (batch, seq))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(idx, idx)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for ptr, size in storages.items() if ptr not in params)


SHAPES = [
    ModelConfig(vocab_size=2048, num_dims=128, num_heads=4, num_kv_heads=2, num_layers=2, ffn_hidden_dims=352,
                context_len=128),
    ModelConfig(vocab_size=1024, num_dims=192, num_heads=6, num_kv_heads=6, num_layers=3, ffn_hidden_dims=512,
                context_len=128),
    # use_flash=false: fused / math SDPA instead of explicit attention in bf16.
    ModelConfig(vocab_size=1024, num_dims=128, num_heads=8, num_kv_heads=2, num_layers=2, ffn_hidden_dims=352,
                context_len=128, use_flash=False),
]


@pytest.mark.parametrize("config", SHAPES, ids=["gqa", "mha", "no-flash"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_activation_estimate_matches_saved_tensors(config, bf16, checkpointing):
    torch.manual_seed(0)
    model = Transformer(config)
    model.gradient_checkpointing = checkpointing
    measured = measured_saved_bytes(model, batch=4, seq=128, bf16=bf16)
    estimate = activation_bytes(config, 4, 128, low_precision=bf16, checkpointing=False)
    if checkpointing:
        # What stays saved is the block inputs + the head; one block is rebuilt in backward.
        full_block = activation_bytes(config, 4, 128, bf16, False) - activation_bytes(
            ModelConfig(**{**config.__dict__, "num_layers": config.num_layers - 1}), 4, 128, bf16, False
        )
        estimate = activation_bytes(config, 4, 128, bf16, True) - full_block
    assert measured == pytest.approx(estimate, rel=0.10)


def test_checkpointing_saves_memory_on_deep_models():
    config = ModelConfig(num_layers=12)
    plain = training_memory(config, TrainConfig(batch_size=16))
    saved = training_memory(config, TrainConfig(batch_size=16, gradient_checkpointing=True))
    assert saved.activations < 0.5 * plain.activations
    assert saved.weights == plain.weights and saved.optimizer == 2 * saved.weights


def test_flops_per_token_is_six_n_plus_attention():
    config = ModelConfig()
    n_matmul = parameter_count(config) - 2 * config.num_dims * config.num_layers - config.num_dims
    attention = 12 * config.num_layers * config.num_dims * 256
    assert flops_per_token(config, 256) == 6 * n_matmul + attention
    assert flops_per_token(config, 512) > flops_per_token(config, 256)


def test_parameter_count_matches_the_built_model_for_layernorm_too():
    config = ModelConfig(norm_type="layernorm", num_layers=2)
    assert Transformer(config).num_parameters() == parameter_count(config)
