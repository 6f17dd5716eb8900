"""Fine-tuning a trained run: LoRA adapters that really train on a frozen base, exact resume,
small checkpoints that reference their base, merged and peft exports with equal logits, and
refusals that say what is wrong."""

import dataclasses
import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_run_config, replace_train
from engine.config import validate
from engine.config.schema import LoraConfig
from engine.errors import UserFacingError
from engine.model.builder import build_model
from engine.model.lora import LoraError, LoraLinear, apply_lora, merged_state_dict
from engine.runs.events import RunStarted
from engine.runs.checkpoint import load_latest
from engine.train.init_from import InitFromError, base_problems, finetune_config, resolve_base
from engine.train.optimizers import build_optimizer

from test_trainer import train


@pytest.fixture(scope="module")
def base_run(token_cache, tmp_path_factory):
    """A tiny model trained on the Python docs: the base every test here fine-tunes. Beside it,
    notes.jsonl: the new text, lines of notes in a pattern the docs never had."""
    root = tmp_path_factory.mktemp("lora-base")
    # 120 steps, not fewer: a barely trained base has embeddings so small that no adapter on the
    # projections moves its logits far (the embedding and final norm are frozen).
    config = make_tiny_run_config(token_cache, str(root / "runs"), max_steps=120, eval_interval=120)
    _, finished, _ = train(config, root / "base")
    assert finished.status == "completed", finished.message
    notes = [json.dumps({"text": f"Note {i}: the model reads the notes and writes them back, line {i % 7} of seven."})
             for i in range(400)]
    (root / "notes.jsonl").write_text("\n".join(notes))
    return root / "base"


def lora_config(base_run, tmp_path, token_cache, **lora):
    """A LoRA fine-tune of `base_run` on new text (its notes.jsonl)."""
    scratch = make_tiny_run_config(token_cache, str(tmp_path / "runs"), max_steps=30, eval_interval=15,
                                   learning_rate=1e-2)
    notes = str(base_run.parent / "notes.jsonl")
    scratch = dataclasses.replace(scratch, data=dataclasses.replace(scratch.data, source=notes),
                                  lora=LoraConfig(enabled=True, **{"rank": 4, **lora}))
    return finetune_config(scratch, resolve_base(base_run))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapted_model(run_dir):
    from engine.runs.trained_run import load_run

    return load_run(run_dir).model


def test_lora_trains_the_adapters_and_leaves_the_base_bit_identical(base_run, tmp_path, token_cache):
    base_checkpoint = resolve_base(base_run).checkpoint
    before = sha256(base_checkpoint / "model.safetensors")
    config = lora_config(base_run, tmp_path, token_cache)
    trainer, finished, events = train(config, tmp_path / "lora")
    assert finished.status == "completed", finished.message

    started = next(e for e in events if isinstance(e, RunStarted))
    adapters = sum(p.numel() for n, p in trainer.model.named_parameters() if n.endswith(("lora_A", "lora_B")))
    assert started.trainable_params == adapters and 0 < adapters < started.params / 5
    assert started.init_from == str(base_checkpoint) and started.init_from_sha256 == before
    # Only adapters were in the optimizer, and every base weight is where it started.
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert all(group["weight_decay"] == 0.0 for group in trainer.optimizer.param_groups)
    base = load_file(base_checkpoint / "model.safetensors")
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], base[k]) for k in base)
    assert sha256(base_checkpoint / "model.safetensors") == before
    assert all(m.lora_B.abs().sum() > 0 for m in trainer.model.modules() if isinstance(m, LoraLinear))
    # The loss on the new text falls.
    assert sum(trainer.losses[-5:]) / 5 < trainer.losses[0] - 0.25

    # The checkpoint holds the adapters and a reference to the base, not a second copy of it.
    checkpoint = load_latest(tmp_path / "lora")
    assert set(checkpoint.model_state) == {k for k in state if k.endswith((".lora_A", ".lora_B"))}
    assert checkpoint.state.notes.base == {"checkpoint": str(base_checkpoint), "sha256": before}
    assert ((checkpoint.path / "model.safetensors").stat().st_size
            < 0.25 * (base_checkpoint / "model.safetensors").stat().st_size)


def test_step_zero_equals_the_base_model(base_run):
    base = resolve_base(base_run)
    plain = build_model(base.config.model, seed=1)
    plain.load_state_dict(load_file(base.checkpoint / "model.safetensors"))
    adapted = build_model(base.config.model, seed=1, lora=LoraConfig(enabled=True, target_modules=("all-linear",)))
    adapted.load_state_dict(load_file(base.checkpoint / "model.safetensors"), strict=False)
    idx = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain(idx)[0], adapted(idx)[0])
    # The base is frozen before the optimizer is built: it holds the adapters alone.
    optimizer = build_optimizer(adapted, dataclasses.replace(base.config, lora=LoraConfig(enabled=True)),
                                torch.device("cpu"))
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(held) == 2 * 7 * base.config.model.num_layers
    assert all(p.shape[0] == 8 or p.shape[1] == 8 for p in held)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_lora_resume_is_bit_identical(base_run, tmp_path, token_cache, optimizer):
    config = replace_train(lora_config(base_run, tmp_path, token_cache, dropout=0.1), max_steps=16,
                           eval_interval=4, optimizer=optimizer)
    straight, _, _ = train(config, tmp_path / "straight")
    first, stopped, _ = train(config, tmp_path / "resumed", stop_after=8)
    assert stopped.status == "stopped" and stopped.step == 8
    second, finished, _ = train(config, tmp_path / "resumed", resume=True)
    assert finished.status == "completed" and finished.step == 16
    assert first.losses + second.losses == straight.losses  # exact floats, step by step
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_000016" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_000016" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained_lora(base_run, tmp_path_factory, token_cache):
    """A finished LoRA run with rsLoRA on every linear layer, and its exports."""
    from engine.use.hf_export import export_hf, export_peft

    root = tmp_path_factory.mktemp("lora-run")
    config = replace_train(lora_config(base_run, root, token_cache, target_modules=("all-linear",), use_rslora=True,
                                       alpha=8.0), max_steps=12)
    _, finished, _ = train(config, root / "lora")
    assert finished.status == "completed", finished.message
    merged = export_hf(root / "lora")
    adapter, base = export_peft(root / "lora")
    return root / "lora", merged, adapter, base


def test_merged_export_equals_the_adapted_model(trained_lora):
    from transformers import AutoModelForCausalLM

    run_dir, merged, _, _ = trained_lora
    ours = adapted_model(run_dir)
    assert json.loads((merged / "lightlm_export.json").read_text())["merged_lora"] is True
    hf = AutoModelForCausalLM.from_pretrained(merged, torch_dtype=torch.float32).eval()
    idx = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ours(idx)[0]
        torch.testing.assert_close(hf(idx).logits, expected, rtol=0, atol=1e-4)
        # The merge itself, in our model: W + s B A in fp32 computes what the adapters do.
        plain = build_model(ours.config)
        plain.load_state_dict(merged_state_dict(ours))
        torch.testing.assert_close(plain(idx)[0], expected, rtol=0, atol=1e-5)


def test_peft_loads_the_adapter_folder_with_equal_logits(trained_lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _, adapter, base = trained_lora
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["use_rslora"] is True
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    keys = load_file(adapter / "adapter_model.safetensors").keys()
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32),
                                      adapter).eval()
    ours = adapted_model(run_dir)
    idx = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, ours(idx)[0], rtol=0, atol=1e-4)
        # The adapters matter: without them the logits are the base's, and differ.
        with model.disable_adapter():
            assert (model(idx).logits - ours(idx)[0]).abs().max() > 1e-3


def test_generate_samples_from_base_plus_adapters(trained_lora):
    from engine.runs.trained_run import load_run
    from engine.use.generate import SamplingSettings, generate_text

    run = load_run(trained_lora[0])
    assert any(isinstance(m, LoraLinear) for m in run.model.modules())
    text = generate_text(run, "def ", SamplingSettings(max_new_tokens=12, temperature=0.0))
    assert isinstance(text, str) and text


def test_a_typo_in_target_modules_lists_the_real_names(base_run, tmp_path, token_cache):
    config = lora_config(base_run, tmp_path, token_cache, target_modules=("q_proj", "v_prj"))
    problems = [str(p) for p in validate(config)]
    assert any("v_prj is not a layer" in p and "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in p
               for p in problems)
    model = build_model(config.model)
    with pytest.raises(LoraError, match=r"v_prj matches no layer; this model's layers are q_proj, k_proj"):
        apply_lora(model, dataclasses.replace(config.lora, target_modules=("v_prj",)))


def test_rank_larger_than_a_target_is_refused(base_run):
    base = resolve_base(base_run)
    with pytest.raises(LoraError,
                       match=r"lora.rank 40 is larger than layers.0.self_attn.k_proj's smaller side \(32 x 64\)"):
        build_model(base.config.model, lora=LoraConfig(enabled=True, rank=40, target_modules=("attn",)))


def test_lora_without_a_base_is_refused():
    from engine.config import RunConfig

    problems = [str(p) for p in validate(dataclasses.replace(RunConfig(), lora=LoraConfig(enabled=True)))]
    assert any("set train.init_from to a run directory" in p for p in problems)


def test_mixture_of_experts_feed_forwards_stay_frozen(base_run):
    from engine.config import RunConfig
    from engine.config.schema import ModelConfig

    moe = ModelConfig(vocab_size=64, num_dims=32, num_heads=4, num_kv_heads=2, num_layers=1, ffn_hidden_dims=32,
                      context_len=16, use_moe=True, moe_num_experts=2, use_lossfreebalance=True)
    config = dataclasses.replace(RunConfig(), model=moe, train=dataclasses.replace(RunConfig().train, init_from="x"),
                                 lora=LoraConfig(enabled=True, target_modules=("mlp",)))
    assert any("experts are stacked tensors" in str(p) for p in validate(config))
    model = build_model(moe, lora=LoraConfig(enabled=True, target_modules=("all-linear",)))
    adapted = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert adapted == [f"layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    # The routing bias is the base's too: training the adapters does not move it.
    bias = model.layers[0].mlp.expert_bias.clone()
    model(torch.randint(0, 64, (2, 8)))
    model.after_optimizer_step()
    assert torch.equal(model.layers[0].mlp.expert_bias, bias)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_init_from_refuses_what_it_cannot_use(base_run, tmp_path, token_cache):
    with pytest.raises(InitFromError, match="not a run directory"):
        resolve_base(tmp_path)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.toml").write_text((base_run / "config.toml").read_text())
    with pytest.raises(InitFromError, match="has no complete checkpoint"):
        resolve_base(empty)

    base = resolve_base(base_run)
    config = lora_config(base_run, tmp_path, token_cache)
    assert base_problems(config, base) == []
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, num_dims=128))
    assert any("model.num_dims = 128 (the base has 64)" in p for p in base_problems(wider, base))
    retokenized = dataclasses.replace(config, data=dataclasses.replace(config.data, tokenizer="bpe"))
    assert any("bpe trains a new tokenizer" in p for p in base_problems(retokenized, base))
    # The trainer says so before any data is prepared.
    _, finished, _ = train(retokenized, tmp_path / "refused")
    assert finished.status == "failed" and "data.tokenizer" in finished.message


def test_a_base_that_changed_since_is_named_on_resume(base_run, tmp_path, token_cache):
    import shutil

    copy = tmp_path / "base-copy"
    shutil.copytree(base_run, copy)
    shutil.copy(base_run.parent / "notes.jsonl", tmp_path / "notes.jsonl")
    config = lora_config(copy, tmp_path, token_cache)
    config = replace_train(config, max_steps=4, eval_interval=2)
    _, finished, _ = train(config, tmp_path / "lora")
    assert finished.status == "completed", finished.message
    weights = resolve_base(copy).checkpoint / "model.safetensors"
    tensors = load_file(weights)
    tensors["norm.weight"] = tensors["norm.weight"] * 2
    from safetensors.torch import save_file

    save_file(tensors, weights)
    with pytest.raises(UserFacingError, match="changed since this run started from it"):
        adapted_model(tmp_path / "lora")
    _, resumed, _ = train(replace_train(config, max_steps=6), tmp_path / "lora", resume=True)
    assert resumed.status == "failed" and "changed since this run started" in resumed.message


def test_full_fine_tune_starts_from_the_base_weights(base_run, tmp_path, token_cache):
    config = dataclasses.replace(lora_config(base_run, tmp_path, token_cache), lora=LoraConfig(enabled=False))
    trainer, finished, events = train(replace_train(config, max_steps=5, eval_interval=5), tmp_path / "full")
    assert finished.status == "completed", finished.message
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.trainable_params == started.params
    # From trained weights, the first loss is far below a fresh model's (about ln 512).
    assert trainer.losses[0] < math.log(512) - 1.0


@pytest.mark.parametrize("loss_free", [False, True], ids=["mixtral", "glm4moe"])
def test_peft_adapters_on_a_mixture_of_experts_base_give_equal_logits(loss_free):
    """The attention adapters of a MoE model under peft's names fit the Hugging Face MoE its base
    exports as (Mixtral for softmax routing, Glm4Moe for loss-free routing)."""
    import transformers
    from peft import LoraConfig as PeftLoraConfig, get_peft_model, set_peft_model_state_dict

    from engine.config.schema import ModelConfig
    from engine.model.hf_compat import hf_config_kwargs, to_hf_state_dict
    from engine.model.lora import peft_adapter_config, peft_state_dict

    moe = ModelConfig(vocab_size=64, num_dims=32, num_heads=4, num_kv_heads=2, num_layers=2, ffn_hidden_dims=32,
                      context_len=16, use_moe=True, moe_num_experts=4, moe_active_experts=2,
                      use_lossfreebalance=loss_free)
    lora = LoraConfig(enabled=True, rank=4, target_modules=("all-linear",))
    base = build_model(moe, seed=0)
    ours = build_model(moe, seed=0, lora=lora)
    ours.load_state_dict(base.state_dict(), strict=False)
    for module in ours.modules():
        if isinstance(module, LoraLinear):
            torch.nn.init.normal_(module.lora_B, std=0.1, generator=torch.Generator().manual_seed(3))
    config_class, kwargs = hf_config_kwargs(moe)
    hf = getattr(transformers, config_class.replace("Config", "ForCausalLM"))(
        getattr(transformers, config_class)(**kwargs)).eval()
    hf.load_state_dict(to_hf_state_dict(base.state_dict(), moe), strict=False)
    adapter = peft_adapter_config(lora, "base", ours.lora_paths)
    assert adapter["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = get_peft_model(hf, PeftLoraConfig(r=4, lora_alpha=adapter["lora_alpha"],
                                              target_modules=adapter["target_modules"], task_type="CAUSAL_LM"))
    assert set_peft_model_state_dict(model, peft_state_dict(ours)).unexpected_keys == []
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, ours(idx)[0], rtol=0, atol=1e-5)
        with model.disable_adapter():
            assert (model(idx).logits - ours(idx)[0]).abs().max() > 1e-2


def test_old_lora_keys_in_train_load_with_their_defaults_and_point_to_the_lora_section():
    from engine.config import ConfigError, loads_config

    old = ('[train]\nuse_lora = false\nlora_rank = 8\nlora_alpha = 16.0\n'
           'lora_target_modules = ["q_proj", "v_proj"]\n')
    assert loads_config(old).lora == LoraConfig()
    with pytest.raises(ConfigError, match=r"LoRA settings live in the \[lora\] section now: write enabled = true"):
        loads_config("[train]\nuse_lora = true\n")
    assert loads_config("[lora]\nenabled = true\nrank = 4\ntarget_modules = [\"attn\"]\n").lora.rank == 4


@pytest.mark.parametrize("targets", [("attn", "mlp"), ("q_proj", "v_proj"), ("all-linear",), ("down_proj",)])
def test_the_adapter_count_estimate_matches_the_model(targets):
    from engine.config.finetune import lora_parameter_count
    from engine.config.schema import ModelConfig

    config = ModelConfig(vocab_size=512, num_dims=64, num_heads=4, num_kv_heads=2, num_layers=2,
                         ffn_hidden_dims=128, context_len=64)
    model = build_model(config, lora=LoraConfig(enabled=True, rank=4, target_modules=targets))
    assert lora_parameter_count(config, targets, 4) == model.num_trainable_parameters()


def test_a_base_whose_bpe_came_out_smaller_than_its_vocabulary_fine_tunes(base_run, tmp_path, token_cache):
    """A BPE trained on a small corpus can have fewer tokens than model.vocab_size; the base kept
    its size, and its fine-tune (same tokenizer folder) must accept that."""
    small = make_tiny_run_config(token_cache, str(tmp_path / "runs"), max_steps=3, eval_interval=3)
    small = dataclasses.replace(small, data=dataclasses.replace(small.data,
                                                                source=str(base_run.parent / "notes.jsonl")))
    trainer, finished, _ = train(small, tmp_path / "small-base")
    assert finished.status == "completed", finished.message
    assert trainer.store.meta.vocab_size < small.model.vocab_size
    config = replace_train(lora_config(tmp_path / "small-base", tmp_path, token_cache), max_steps=3)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=small.data.source))
    _, finished, _ = train(config, tmp_path / "lora")
    assert finished.status == "completed", finished.message


def test_the_memory_estimate_counts_gradients_and_optimizer_state_for_the_adapters_alone():
    from engine.config import RunConfig
    from engine.config.schema import ModelConfig
    from engine.model.estimates import training_memory

    config = ModelConfig(vocab_size=512, num_dims=64, num_heads=4, num_kv_heads=2, num_layers=2,
                         ffn_hidden_dims=128, context_len=64)
    lora = LoraConfig(enabled=True, rank=4)
    run = dataclasses.replace(RunConfig(), model=config, lora=lora)
    model = build_model(config, lora=lora)
    optimizer = build_optimizer(model, run, torch.device("cpu"))
    model(torch.randint(0, 512, (2, 16)), torch.randint(0, 512, (2, 16)))[1].backward()
    optimizer.step()
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t) and t.dim() > 0)
    estimate = training_memory(config, run.train, lora=lora)
    assert estimate.optimizer == state_bytes
    assert estimate.gradients == 4 * model.num_trainable_parameters()
    assert estimate.weights == 4 * model.num_parameters()
    assert estimate.total < training_memory(config, run.train).total
