"""Mixture-of-experts export: Mixtral for softmax routing, Glm4Moe for loss-free routing (shared
experts included), both loaded by AutoModelForCausalLM with logits equal to ours; a run no
Hugging Face model computes exactly is refused with a sentence and nothing is written."""

import dataclasses

import pytest
import torch

from engine.use.hf_export import ExportError, export_hf
from engine.runs.trained_run import load_run
from engine.train.trainer import Trainer


def trained_moe_run(tiny_run_config, run_dir, **moe):
    config = tiny_run_config(max_steps=6, eval_interval=0)
    model = dataclasses.replace(config.model, use_moe=True, moe_num_experts=4, moe_active_experts=2,
                                moe_bias_update_rate=0.01, **moe)
    finished = Trainer(dataclasses.replace(config, model=model), run_dir, threads=1).run()
    assert finished.status == "completed", finished.message
    return run_dir


@pytest.mark.parametrize(("moe", "architecture"), [
    ({"use_lossfreebalance": False, "moe_shared_experts": 0}, "MixtralForCausalLM"),
    ({"use_lossfreebalance": True, "moe_shared_experts": 0}, "Glm4MoeForCausalLM"),
    ({"use_lossfreebalance": True, "moe_shared_experts": 1}, "Glm4MoeForCausalLM"),
])
def test_moe_export_loads_in_transformers_with_equal_logits(tiny_run_config, tmp_path, moe, architecture):
    from transformers import AutoModelForCausalLM

    run_dir = trained_moe_run(tiny_run_config, tmp_path / "run", **moe)
    target = export_hf(run_dir, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(target).eval()
    assert type(hf).__name__ == architecture
    ours = load_run(run_dir).model.eval()
    if moe["use_lossfreebalance"]:  # the trained routing bias travelled with the weights
        bias = hf.model.layers[0].mlp.gate.e_score_correction_bias
        assert bias.abs().sum() > 0 and torch.equal(bias, ours.layers[0].mlp.expert_bias)
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids)[0], rtol=0, atol=1e-4)


def test_softmax_routing_with_shared_experts_is_refused_with_the_alternatives(tiny_run_config, tmp_path):
    run_dir = trained_moe_run(tiny_run_config, tmp_path / "run", use_lossfreebalance=False, moe_shared_experts=1)
    with pytest.raises(ExportError) as refused:
        export_hf(run_dir, tmp_path / "hf")
    message = str(refused.value)
    assert "moe_shared_experts = 0" in message and "use_lossfreebalance = true" in message
    assert not (tmp_path / "hf").exists()
