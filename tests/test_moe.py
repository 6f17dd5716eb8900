"""The mixture-of-experts feed-forward: dispatch equals a naive reference, both balancing
methods do what they claim, the optimizer treats routers and stacked experts right."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from engine.config import ModelConfig, RunConfig, TrainConfig
from engine.data.loader import StepBatch
from engine.machine.device import setup_compute
from engine.model.builder import build_model
from engine.model.moe import GroupedExperts, MoEFeedForward
from engine.model.layers import HIDDEN_MATRICES, ROUTERS, FeedForward
from engine.train.muon import MuonAdamW
from engine.train.optimizers import build_optimizer
from engine.train.step import TrainStep


def moe_config(**changes) -> ModelConfig:
    base = dict(vocab_size=64, num_dims=32, num_heads=4, num_kv_heads=2, num_layers=2, ffn_hidden_dims=48,
                context_len=32, use_moe=True, moe_num_experts=4, moe_active_experts=2)
    base.update(changes)
    return ModelConfig(**base)


def naive_moe(layer: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert: what the vectorised dispatch must equal."""
    tokens = x.reshape(-1, x.shape[-1])
    chosen, gates, _ = layer.route(tokens)
    e = layer.experts
    out = torch.zeros_like(tokens)
    for n in range(tokens.shape[0]):
        for slot in range(layer.top_k):
            i = int(chosen[n, slot])
            h = F.silu(tokens[n] @ e.gate_proj[i].T) * (tokens[n] @ e.up_proj[i].T)
            out[n] += gates[n, slot] * (h @ e.down_proj[i].T)
    if layer.shared_experts is not None:
        out = out + layer.shared_experts(tokens)[0]
    return out.reshape(x.shape)


@pytest.mark.parametrize("loss_free", [False, True])
@pytest.mark.parametrize("shared", [0, 1])
def test_vectorised_dispatch_equals_the_naive_reference(loss_free, shared):
    torch.manual_seed(0)
    layer = MoEFeedForward(moe_config(use_lossfreebalance=loss_free, moe_shared_experts=shared))
    layer.init_weights(std=0.2, residual_std=0.1)
    if loss_free:
        layer.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1]))
    x = torch.randn(3, 7, 32)
    out, _ = layer(x)
    torch.testing.assert_close(out, naive_moe(layer, x), rtol=1e-5, atol=1e-6)

    # Gradients agree too (the weights' and the input's).
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(x1)[0].square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    naive_moe(layer, x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)
    for a, b in zip(grads, [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grouped_matmul_path_equals_the_loop():
    # The grouped path runs on CUDA in bf16; torch's CPU kernel computes the same thing, so the
    # path's bookkeeping (offsets, layout) is checked here against the per-expert loop.
    torch.manual_seed(0)
    experts = GroupedExperts(4, 32, 48, "silu").to(torch.bfloat16)
    for w in (experts.gate_proj, experts.up_proj, experts.down_proj):
        torch.nn.init.normal_(w, std=0.2)
    counts = torch.tensor([5, 0, 9, 3])
    x = torch.randn(17, 32, dtype=torch.bfloat16)
    torch.testing.assert_close(experts._grouped(x, counts).float(), experts._looped(x, counts).float(),
                               rtol=2e-2, atol=2e-2)


def test_grouped_path_under_autocast_trains_like_the_loop(monkeypatch):
    # The whole layer, forward and backward, with the grouped path forced on under bf16 autocast
    # (as a CUDA run takes it) against the loop path.
    import engine.model.moe as moe_module

    torch.manual_seed(0)
    model = build_model(moe_config(num_dims=32, ffn_hidden_dims=48), seed=0)
    inputs = torch.randint(0, 64, (2, 16))

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(inputs, inputs)[1]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    looped = loss_and_grads()
    taken = []
    monkeypatch.setattr(moe_module, "use_grouped_mm",
                        lambda x, dtype, shape: taken.append(dtype) or dtype == torch.bfloat16)
    grouped = loss_and_grads()
    assert taken and all(dtype == torch.bfloat16 for dtype in taken)
    torch.testing.assert_close(grouped[0], looped[0], rtol=1e-2, atol=1e-2)
    for a, b in zip(grouped[1], looped[1]):
        torch.testing.assert_close(a, b, rtol=0.1, atol=2e-3)


def test_one_expert_top1_without_shared_equals_the_dense_ffn():
    torch.manual_seed(0)
    config = moe_config(moe_num_experts=1, moe_active_experts=1)
    moe, dense = MoEFeedForward(config), FeedForward(config)
    moe.init_weights(std=0.02, residual_std=0.01)
    with torch.no_grad():
        dense.gate_proj.weight.copy_(moe.experts.gate_proj[0])
        dense.up_proj.weight.copy_(moe.experts.up_proj[0])
        dense.down_proj.weight.copy_(moe.experts.down_proj[0])
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(moe(x)[0], dense(x)[0], rtol=0, atol=0)


def test_stacked_experts_get_the_dense_init():
    model = build_model(moe_config(num_dims=64, ffn_hidden_dims=256, moe_num_experts=8, num_layers=2), seed=0)
    dense = build_model(moe_config(num_dims=64, ffn_hidden_dims=256, use_moe=False, num_layers=2), seed=0)
    experts = model.layers[0].mlp.experts
    assert experts.gate_proj.std().item() == pytest.approx(dense.layers[0].mlp.gate_proj.weight.std().item(), rel=0.05)
    assert experts.down_proj.std().item() == pytest.approx(dense.layers[0].mlp.down_proj.weight.std().item(), rel=0.05)
    assert model.layers[0].mlp.router.weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_routers_are_their_own_group_and_never_muon():
    model = build_model(moe_config(moe_shared_experts=1), seed=0)
    groups = model.parameter_groups()
    routers = {id(m.mlp.router.weight) for m in model.layers}
    assert {id(p) for p in groups[ROUTERS]} == routers
    hidden = {id(p) for p in groups[HIDDEN_MATRICES]}
    assert all(id(m.mlp.experts.gate_proj) in hidden and id(m.mlp.experts.down_proj) in hidden for m in model.layers)
    assert not routers & hidden
    for optimizer in ("adamw", "muon"):
        config = RunConfig(model=model.config, train=TrainConfig(optimizer=optimizer, weight_decay=0.1))
        opt = build_optimizer(model, config, torch.device("cpu"))
        for group in opt.param_groups:
            if routers & {id(p) for p in group["params"]}:
                assert group["weight_decay"] == 0.0 and not group.get("muon", False)
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_muon_treats_each_stacked_expert_as_its_own_matrix():
    torch.manual_seed(0)
    stacked = torch.nn.Parameter(torch.randn(3, 16, 8))
    singles = [torch.nn.Parameter(stacked.detach()[e].clone()) for e in range(3)]
    grad = torch.randn(3, 16, 8)
    stacked.grad = grad.clone()
    for e, p in enumerate(singles):
        p.grad = grad[e].clone()
    for params in ([stacked], singles):
        opt = MuonAdamW([{"params": params, "weight_decay": 0.1, "muon": True}], lr=0.01,
                        orthogonalise_dtype=torch.float32)
        opt.step()
    for e, p in enumerate(singles):
        torch.testing.assert_close(stacked.detach()[e], p.detach(), rtol=1e-5, atol=1e-6)


def _skewed_layer(loss_free: bool) -> MoEFeedForward:
    """A router initialised to send most tokens to expert 0 (its row points along the mean input)."""
    torch.manual_seed(0)
    layer = MoEFeedForward(moe_config(moe_num_experts=4, moe_active_experts=1, use_lossfreebalance=loss_free,
                                      moe_bias_update_rate=0.01))
    layer.init_weights(std=0.02, residual_std=0.01)
    with torch.no_grad():
        layer.router.weight[0] = 0.5
    return layer


def _skewed_tokens(n: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 32, generator=generator) + 0.1


def test_loss_free_balancing_evens_the_load_and_the_bias_gets_no_gradient():
    layer = _skewed_layer(loss_free=True)
    router = torch.optim.SGD(layer.parameters(), lr=0.0)  # the weights stay: only the bias balances
    x = _skewed_tokens()

    def max_violation() -> float:
        with torch.no_grad():
            chosen, _, _ = layer.route(x)
        load = torch.bincount(chosen.reshape(-1), minlength=4).float()
        return float((load.max() - load.mean()) / load.mean())

    before = max_violation()
    assert before > 1.5  # most tokens on expert 0
    for _ in range(300):
        out, aux = layer(x)
        assert aux is None
        out.square().mean().backward()
        assert "expert_bias" not in dict(layer.named_parameters())
        assert layer.expert_bias.grad is None and not layer.expert_bias.requires_grad
        router.step()
        layer.update_bias(layer.take_counts())
        router.zero_grad()
    assert max_violation() < 0.25
    assert layer.expert_bias.dtype == torch.float32


def test_aux_loss_sends_a_gradient_to_the_router():
    layer = _skewed_layer(loss_free=False)
    x = _skewed_tokens()
    out, aux = layer(x)
    assert aux is not None and aux.item() > 1.5 * layer.aux_loss_coef  # well above its balanced value
    grad = torch.autograd.grad(aux, layer.router.weight)[0]
    assert grad.abs().sum() > 0
    # Descending it moves probability away from the overloaded expert 0.
    with torch.no_grad():
        before = layer.route(x)[2][:, 0].mean()
        layer.router.weight -= 0.1 * grad / grad.norm()
        assert layer.route(x)[2][:, 0].mean() < before


def test_bias_moves_once_per_optimizer_step_with_loads_from_every_micro_batch():
    config = moe_config(use_lossfreebalance=True, moe_bias_update_rate=0.5, moe_active_experts=1)
    model = build_model(config, seed=0)
    run = RunConfig(model=config, train=TrainConfig(batch_size=2, accumulation_steps=2))
    compute = setup_compute("float32", 1)
    counted = []
    for moe in model.moe_layers():
        original = moe.update_bias
        moe.update_bias = lambda counts, original=original: (counted.append(counts.clone()), original(counts))
    step = TrainStep(model, build_optimizer(model, run, compute.device), compute, micro_batch_size=2)
    inputs = torch.randint(0, 64, (4, 16))
    result = step(StepBatch(step=0, inputs=inputs, targets=inputs), lr=1e-3)
    # One update per layer, from the tokens of both micro-batches (4 windows x 16 tokens x k=1).
    assert len(counted) == config.num_layers
    assert all(c.sum().item() == 4 * 16 for c in counted)
    for moe, counts in zip(model.moe_layers(), counted):
        torch.testing.assert_close(moe.expert_bias, 0.5 * torch.sign(counts.mean() - counts))
    assert result.extra["expert_load"].shape == (config.num_layers, config.moe_num_experts)
    torch.testing.assert_close(result.extra["expert_load"].sum(-1), torch.ones(config.num_layers))
    assert all(moe.tokens_per_expert.sum() == 0 for moe in model.moe_layers())  # the next step counts afresh


def test_gradient_checkpointing_counts_each_token_once():
    model = build_model(moe_config(moe_active_experts=1), seed=0, gradient_checkpointing=True)
    inputs = torch.randint(0, 64, (2, 16))
    model(inputs, inputs)[1].backward()
    assert all(moe.tokens_per_expert.sum().item() == 32 for moe in model.moe_layers())


def test_evaluation_and_generation_do_not_count_loads():
    model = build_model(moe_config(), seed=0).eval()
    with torch.no_grad():
        model(torch.randint(0, 64, (2, 16)))
    assert all(moe.tokens_per_expert.sum() == 0 for moe in model.moe_layers())


def test_active_parameters_count_k_of_e_experts():
    config = moe_config(moe_num_experts=8, moe_active_experts=2, moe_shared_experts=1)
    model = build_model(config, seed=0)
    per_expert = 3 * config.num_dims * config.ffn_hidden_dims
    assert model.num_parameters() - model.num_active_parameters() == config.num_layers * 6 * per_expert
    dense = build_model(dataclasses.replace(config, use_moe=False), seed=0)
    assert model.num_active_parameters() == dense.num_parameters() + config.num_layers * (
        2 * per_expert + config.num_dims * 8)


@pytest.mark.parametrize(("active", "shared"), [(1, 0), (2, 0), (2, 1)])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_estimates_count_total_and_active_parameters_and_moe_activations(active, shared, bf16):
    from engine.model.estimates import activation_bytes, active_parameter_count, parameter_count
    from test_estimates import measured_saved_bytes

    config = ModelConfig(vocab_size=2048, num_dims=128, num_heads=4, num_kv_heads=2, num_layers=2,
                         ffn_hidden_dims=352, context_len=128, use_moe=True, moe_num_experts=8,
                         moe_active_experts=active, moe_shared_experts=shared)
    model = build_model(config, seed=0)
    assert parameter_count(config) == model.num_parameters()
    assert active_parameter_count(config) == model.num_active_parameters() < model.num_parameters()
    measured = measured_saved_bytes(model, batch=4, seq=128, bf16=bf16)
    assert measured == pytest.approx(activation_bytes(config, 4, 128, low_precision=bf16, checkpointing=False),
                                     rel=0.10)


def test_flops_per_token_follow_the_active_parameters():
    from engine.model.estimates import flops_per_token

    dense = ModelConfig(ffn_hidden_dims=768)
    moe = dataclasses.replace(dense, use_moe=True, moe_num_experts=8, moe_active_experts=1)
    router = 6 * dense.num_layers * dense.num_dims * 8
    assert flops_per_token(moe, 256) == flops_per_token(dense, 256) + router


def test_moe_preset_is_valid_and_as_active_as_laptop():
    from engine.config import load_preset, validate
    from engine.model.estimates import active_parameter_count, parameter_count

    moe, laptop = load_preset("moe"), load_preset("laptop")
    assert validate(moe, cuda_available=False) == []
    assert moe.model.use_moe and moe.model.moe_active_experts >= 2  # k = 1 would leave the router no LM signal
    assert active_parameter_count(moe.model) == pytest.approx(parameter_count(laptop.model), rel=0.01)
    assert parameter_count(moe.model) > 1.4 * active_parameter_count(moe.model)


def test_cached_generation_equals_uncached_for_moe():
    model = build_model(moe_config(use_lossfreebalance=True, moe_shared_experts=1), seed=0)
    prompt = torch.randint(0, 64, (2, 5))
    cached = model.generate(prompt, 12, temperature=0, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, 12, temperature=0, use_cache=False))
    assert all(moe.tokens_per_expert.sum() == 0 for moe in model.moe_layers())  # generating counts nothing
