"""Muon: the orthogonalisation, the AdamW half against PyTorch's, and the split of parameters."""

import dataclasses

import pytest
import torch

from engine.config import RunConfig, TrainConfig
from engine.config.schema import ModelConfig
from engine.model.estimates import optimizer_bytes, parameter_count
from engine.model.transformer import Transformer
from engine.train.muon import MuonAdamW, orthogonalise
from engine.train.optimizers import build_optimizer


@pytest.mark.parametrize("shape", [(3, 48, 160), (3, 160, 48), (64, 64)])
def test_orthogonalise_leaves_singular_values_near_one_and_keeps_directions(shape):
    torch.manual_seed(0)
    # Singular values spread over two decades (five iterations cannot lift much smaller ones).
    u, _, vh = torch.linalg.svd(torch.randn(shape), full_matrices=False)
    matrices = u @ torch.diag_embed(torch.logspace(0, -2, u.size(-1))) @ vh
    result = orthogonalise(matrices, dtype=torch.float32)
    assert result.shape == matrices.shape
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.6 and singular.max() < 1.25
    # Same singular vectors: the result is close to U V^T of the input's SVD.
    u, _, vh = torch.linalg.svd(matrices, full_matrices=False)
    cosine = (result * (u @ vh)).sum(dim=(-2, -1)) / (result.norm(dim=(-2, -1)) * (u @ vh).norm(dim=(-2, -1)))
    assert (cosine > 0.95).all()


def test_adamw_groups_step_exactly_like_torch_adamw():
    torch.manual_seed(0)
    ours_params = [torch.randn(5, 7, requires_grad=True), torch.randn(7, requires_grad=True)]
    theirs_params = [p.detach().clone().requires_grad_() for p in ours_params]
    ours = MuonAdamW([{"params": ours_params, "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.95))
    theirs = torch.optim.AdamW(theirs_params, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(5):
        grads = [torch.randn_like(p) for p in ours_params]
        for p, q, g in zip(ours_params, theirs_params, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    for p, q in zip(ours_params, theirs_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_muon_takes_hidden_matrices_and_adamw_the_embedding_and_norms():
    model_config = ModelConfig(vocab_size=64, num_dims=32, num_heads=2, num_kv_heads=1, num_layers=2,
                               ffn_hidden_dims=64, context_len=16)
    model = Transformer(model_config)
    config = RunConfig(model=model_config, train=TrainConfig(optimizer="muon"))
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    muon = {id(p) for g in optimizer.param_groups if g["muon"] for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in muon}
    assert names and all(name.startswith("layers.") and name.endswith("proj.weight") for name in names)
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in each block
    assert model.embed_tokens.weight is not None and id(model.embed_tokens.weight) not in muon

    # A step moves every matrix by an update of RMS about 0.2 * lr, whatever its gradient's scale.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    window = torch.randint(0, 64, (2, 17))
    _, loss, _ = model(window[:, :-1], window[:, 1:])
    (loss * 1000).backward()
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = 1e-2, 0.0
    optimizer.step()
    for name, p in model.named_parameters():
        if name in names:
            rms = (p.detach() - before[name]).pow(2).mean().sqrt().item()
            assert 0.1 * 1e-2 < rms < 0.3 * 1e-2, name


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (its per-parameter state)."""
    return sum(v.numel() * v.element_size() for state in optimizer.state.values()
               for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_optimizer_bytes_is_what_the_real_optimizer_keeps(optimizer):
    """The estimate against the state a real optimizer holds after a step of the laptop shape:
    AdamW's two moments per parameter; Muon's one momentum per hidden matrix and AdamW's two for
    the rest, plus its working stack while stepping (the estimate's `working` term, not kept)."""
    from engine.model.estimates import layer_matmul_params

    model_config = ModelConfig(vocab_size=4096, num_dims=128, num_heads=2, num_kv_heads=1, num_layers=6,
                               ffn_hidden_dims=352, context_len=256)
    torch.manual_seed(0)
    model = Transformer(model_config)
    config = RunConfig(model=model_config, train=TrainConfig(optimizer=optimizer))
    real = build_optimizer(model, config, torch.device("cpu"))
    window = torch.randint(0, 4096, (2, 33))
    model(window[:, :-1], window[:, 1:])[1].backward()
    real.step()
    kept = state_bytes(real)
    estimate = optimizer_bytes(model_config, optimizer)
    params = parameter_count(model_config)
    assert params == sum(p.numel() for p in model.parameters())
    if optimizer == "adamw":
        assert kept == estimate == 8 * params
    else:
        c, f = model_config.num_dims, model_config.ffn_hidden_dims
        working = model_config.num_layers * max(c * f, c * model_config.num_heads * model_config.head_dim) * (4 + 3 * 2)
        hidden = model_config.num_layers * layer_matmul_params(model_config)
        assert kept == 4 * hidden + 8 * (params - hidden) == estimate - working
        assert 4 * params < kept < optimizer_bytes(model_config, "adamw")


def test_muon_is_a_choice_the_validator_knows(tiny_run_config):
    from engine.config import validate

    config = tiny_run_config()
    assert not validate(dataclasses.replace(config, train=dataclasses.replace(config.train, optimizer="muon")))
    problems = validate(dataclasses.replace(config, train=dataclasses.replace(config.train, optimizer="sgd")))
    assert problems and "adamw" in problems[0].message
