"""The transformer: Hugging Face parity, shifted-target loss, generation, trainability."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from engine.config import ModelConfig, load_preset
from engine.model.estimates import parameter_count
from engine.model.hf_compat import from_hf_state_dict, llama_config_kwargs, to_hf_state_dict
from engine.model.transformer import Transformer

GQA = ModelConfig(
    vocab_size=512, num_dims=96, num_heads=6, num_kv_heads=2, num_layers=3,
    ffn_hidden_dims=256, context_len=64, rope_theta=50000.0, rmsnorm_eps=1e-6,
)


def hf_twin(ours: Transformer) -> LlamaForCausalLM:
    hf = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(ours.config))).eval()
    result = hf.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=False)
    assert result.unexpected_keys == [] and result.missing_keys == ["lm_head.weight"]
    return hf


@pytest.mark.parametrize(
    "config",
    [
        GQA,
        ModelConfig(vocab_size=300, num_dims=64, num_heads=4, num_kv_heads=4, num_layers=2,
                    ffn_hidden_dims=128, context_len=32, activation_fn="gelu_tanh"),
    ],
    ids=["gqa", "mha-gelu"],
)
def test_logits_match_hugging_face_llama(config):
    torch.manual_seed(0)
    ours = Transformer(config).eval()
    # Non-trivial norm weights, so a norm applied in the wrong place would show.
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.uniform_(0.5, 1.5)
    hf = hf_twin(ours)
    idx = torch.randint(0, config.vocab_size, (3, config.context_len))
    with torch.no_grad():
        ours_logits, _, _ = ours(idx)
        hf_logits = hf(idx).logits
    assert torch.allclose(ours_logits, hf_logits, atol=1e-4, rtol=0)
    # In fp32 on the CPU both run the same kernels in the same order: bit for bit (docs/model.md
    # says so; torch 2.13.0, transformers 5.24). The 1e-4 above is the contract elsewhere.
    assert torch.equal(ours_logits, hf_logits), (ours_logits - hf_logits).abs().max()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_parameter_count_equals_hugging_face_and_estimate():
    ours = Transformer(GQA)
    hf = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(GQA)))
    hf_count = sum(p.numel() for p in hf.parameters())  # tied head counted once
    assert ours.num_parameters() == hf_count == parameter_count(GQA)


def test_state_dict_names_map_both_ways():
    ours = Transformer(GQA)
    hf = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(GQA)))
    assert set(from_hf_state_dict(hf.state_dict())) == set(ours.state_dict())


def test_loss_is_over_the_targets_given_not_the_inputs():
    """Upstream LightLM trained on labels = input_ids (no shift): a model could score by copying.
    Here the loss must be cross-entropy of logits[t] against targets[t] exactly."""
    torch.manual_seed(0)
    model = Transformer(GQA)
    idx = torch.randint(0, GQA.vocab_size, (2, 16))
    targets = torch.randint(0, GQA.vocab_size, (2, 16))
    logits, loss, ce = model(idx, targets)
    expected = F.cross_entropy(logits.view(-1, GQA.vocab_size), targets.view(-1))
    assert torch.allclose(loss, expected) and torch.allclose(ce, expected)
    copy_loss = F.cross_entropy(logits.view(-1, GQA.vocab_size), idx.view(-1))
    assert not torch.allclose(loss, copy_loss)


def test_ignore_index_positions_do_not_count():
    torch.manual_seed(0)
    model = Transformer(GQA)
    idx = torch.randint(0, GQA.vocab_size, (1, 16))
    targets = torch.randint(0, GQA.vocab_size, (1, 16))
    masked = targets.clone()
    masked[:, 8:] = -100
    logits, loss, _ = model(idx, masked)
    expected = F.cross_entropy(logits[:, :8].reshape(-1, GQA.vocab_size), targets[:, :8].reshape(-1))
    assert torch.allclose(loss, expected)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = Transformer(GQA).eval()
    idx = torch.randint(0, GQA.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 15] = (changed[0, 15] + 1) % GQA.vocab_size
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, None, None), (0.9, 40, 0.9), (1.3, None, None)])
def test_cached_generation_equals_uncached(temperature, top_k, top_p):
    torch.manual_seed(1)
    model = Transformer(GQA)
    prompt = torch.randint(0, GQA.vocab_size, (2, 5))
    # 80 new tokens run past context_len (64): the window slides in both modes.
    kwargs = dict(max_new_tokens=80, temperature=temperature, top_k=top_k, top_p=top_p, seed=7)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 85)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :5], prompt)


def test_generation_is_reproducible_by_seed_and_stops_at_eos():
    torch.manual_seed(2)
    model = Transformer(GQA)
    prompt = torch.randint(0, GQA.vocab_size, (1, 4))
    a = model.generate(prompt, 30, temperature=1.0, seed=3)
    b = model.generate(prompt, 30, temperature=1.0, seed=3)
    c = model.generate(prompt, 30, temperature=1.0, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    eos = int(a[0, 10])  # a token this run is known to produce at position 10
    stopped = model.generate(prompt, 30, temperature=1.0, seed=3, eos_id=eos)
    first = (stopped[0, 4:] == eos).nonzero()[0].item() + 4
    assert stopped.shape[1] == first + 1 and torch.equal(stopped[0, : first + 1], a[0, : first + 1])


def test_cache_prefill_after_tokens_uses_an_offset_mask():
    """Feeding a chunk of several tokens into a non-empty cache must equal one full pass."""
    torch.manual_seed(3)
    model = Transformer(GQA).eval()
    idx = torch.randint(0, GQA.vocab_size, (2, 24))
    with torch.no_grad():
        full, _ = model.hidden_states(idx)
        cache = model.new_cache(2)
        first, _ = model.hidden_states(idx[:, :10], cache)
        second, _ = model.hidden_states(idx[:, 10:], cache)
    assert torch.allclose(torch.cat([first, second], dim=1), full, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(4)
    model = Transformer(GQA)
    idx = torch.randint(0, GQA.vocab_size, (2, 32))
    model(idx, idx.roll(-1, dims=1))[1].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing = True
    model(idx, idx.roll(-1, dims=1))[1].backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, plain[name], atol=1e-6), name


def test_residual_projections_start_smaller():
    model = Transformer(GQA)
    layer = model.layers[0]
    assert layer.self_attn.o_proj.weight.std() < 0.7 * layer.self_attn.q_proj.weight.std()
    assert layer.mlp.down_proj.weight.std() < 0.7 * layer.mlp.up_proj.weight.std()


def test_tiny_overfits_one_batch():
    config = load_preset("tiny").model
    torch.manual_seed(0)
    model = Transformer(config)
    window = torch.randint(0, config.vocab_size, (4, 65))
    idx, targets = window[:, :-1], window[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(300):
        _, loss, _ = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < 0.05:
            break
    assert losses[0] > 6.0
    assert losses[-1] < 0.05, f"loss only reached {losses[-1]:.3f} in {len(losses)} steps"


def test_bf16_autocast_forward_backward_runs_on_cpu():
    torch.manual_seed(5)
    model = Transformer(GQA)
    idx = torch.randint(0, GQA.vocab_size, (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, _ = model(idx, idx.roll(-1, dims=1))
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_too_long_input_is_a_clear_error():
    model = Transformer(GQA)
    with pytest.raises(ValueError, match="longer than context_len"):
        model(torch.zeros(1, GQA.context_len + 1, dtype=torch.long))


@pytest.mark.parametrize("heads, kv_heads", [(8, 2), (4, 4), (6, 3)])
def test_explicit_attention_equals_sdpa(heads, kv_heads):
    from engine.model.transformer import explicit_causal_attention

    torch.manual_seed(6)
    q = torch.randn(2, heads, 24, 16)
    k, v = torch.randn(2, kv_heads, 24, 16), torch.randn(2, kv_heads, 24, 16)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads)
    assert torch.allclose(explicit_causal_attention(q, k, v, 0.0), expected, atol=1e-5)
    low = explicit_causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.0).float()
    assert torch.allclose(low, expected, atol=3e-2)


def test_attention_paths_agree_inside_the_model():
    """use_flash=false (explicit attention) and the fused path give the same model, and so does
    the bf16 CPU fast path up to bf16 rounding."""
    torch.manual_seed(7)
    fused = Transformer(GQA)
    explicit = Transformer(ModelConfig(**{**GQA.__dict__, "use_flash": False}))
    explicit.load_state_dict(fused.state_dict())
    idx = torch.randint(0, GQA.vocab_size, (2, 40))
    targets = idx.roll(-1, dims=1)
    assert torch.allclose(fused(idx)[0], explicit(idx)[0], atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss_bf16, _ = fused(idx, targets)
    _, loss_fp32, _ = fused(idx, targets)
    assert abs(loss_bf16.item() - loss_fp32.item()) < 0.02
