"""A mixture-of-experts run as two processes (DDP under torchrun, gloo) trains like one: the
loss-free routing bias moves by the loads summed over ranks, so it is the same as one process's."""

import dataclasses
import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from engine.config import save_config
from engine.runs.checkpoint import latest_name


def test_two_processes_move_the_routing_bias_like_one(tiny_run_config, tmp_path):
    config = tiny_run_config(max_steps=12, batch_size=4, accumulation_steps=2, eval_interval=0)
    model = dataclasses.replace(config.model, use_moe=True, moe_num_experts=4, moe_active_experts=2,
                                use_lossfreebalance=True, moe_bias_update_rate=0.01)
    path = save_config(dataclasses.replace(config, model=model), tmp_path / "moe.toml")
    for nproc in (1, 2):
        result = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--config", str(path), "--run-dir",
                                 str(tmp_path / f"p{nproc}"), "--nproc", str(nproc)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    weights = {n: load_file(tmp_path / f"p{n}" / "checkpoints" / latest_name(tmp_path / f"p{n}") / "model.safetensors")
               for n in (1, 2)}
    for layer in range(model.num_layers):
        key = f"layers.{layer}.mlp.expert_bias"
        assert weights[1][key].abs().sum() > 0
        assert weights[2][key].tolist() == pytest.approx(weights[1][key].tolist(), abs=1e-6)
    loads = [[e["expert_load"] for e in map(json.loads, (tmp_path / f"p{n}" / "events.jsonl").read_text().splitlines())
              if e["type"] == "step"] for n in (1, 2)]
    assert len(loads[1]) == 12
    # Step events report the loads of the whole global batch (summed over ranks).
    assert np_close(loads[0], loads[1])


def np_close(a, b) -> bool:
    flat = lambda x: [v for step in x for layer in step for v in layer]  # noqa: E731
    return flat(a) == pytest.approx(flat(b), abs=0.02)
