"""Fine-tuning from the command line: train --init-from, LoRA on, then resume, generate and export;
and the one-sentence refusals."""

import io
import json

from engine.cli import main
from engine.config import save_config


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_init_from_with_lora_trains_adapters_then_resumes_generates_and_exports(tiny_run_config, tmp_path):
    config_path = save_config(tiny_run_config(max_steps=40), tmp_path / "base.toml")
    code, _, err = run_cli("train", "--config", str(config_path), "--run-dir", str(tmp_path / "base"))
    assert code == 0, err
    notes = tmp_path / "notes.jsonl"
    notes.write_text("\n".join(json.dumps({"text": f"Note {i}: line {i % 7} of seven."}) for i in range(300)))

    # The preset / config file gives the training settings; the base gives shape and tokenizer.
    code, out, err = run_cli("train", "--config", str(config_path), "--init-from", str(tmp_path / "base"),
                             "--run-dir", str(tmp_path / "lora"), "--set", "lora.enabled=true",
                             "--set", "lora.rank=4", "--set", f"data.source={notes}", "--set", "train.max_steps=6")
    assert code == 0, err
    assert "Starting from " + str((tmp_path / "base" / "checkpoints" / "step_000040").resolve()) in out
    assert " trainable of " in out and "Finished (completed) at step 6" in out
    from engine.config import load_config

    recorded = load_config(tmp_path / "lora" / "config.toml")
    assert recorded.lora.enabled and len(recorded.train.init_from_sha256) == 64
    assert recorded.data.tokenizer == str((tmp_path / "base" / "tokenizer").resolve())

    code, out, err = run_cli("generate", str(tmp_path / "lora"), "--prompt", "Note ", "--max-new-tokens", "8",
                             "--temperature", "0")
    assert code == 0 and out.startswith("Note "), err
    code, out, err = run_cli("export", str(tmp_path / "lora"))
    assert code == 0, err
    assert "merged model" in out and "PeftModel.from_pretrained" in out
    assert (tmp_path / "lora" / "export" / "peft" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "export" / "base-hf" / "model.safetensors").is_file()


def test_init_from_refusals_are_one_sentence(tiny_run_config, tmp_path):
    config_path = save_config(tiny_run_config(max_steps=4), tmp_path / "run.toml")
    code, _, err = run_cli("train", "--config", str(config_path), "--init-from", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a run directory" in err and "Traceback" not in err
    code, _, err = run_cli("train", "--config", str(config_path), "--set", "lora.enabled=true",
                           "--set", "lora.target_modules=q_proj,vproj")
    assert code == 2 and "vproj is not a layer" in err and "set train.init_from" in err
    code, _, err = run_cli("train", "--config", str(config_path), "--init-from", str(tmp_path), "--budget", "5m")
    assert code == 2 and "a fine-tune keeps its base's shape" in err


def test_inspect_shows_the_adapters_as_the_trainable_parameters():
    code, out, _ = run_cli("inspect", "--json", "--set", "lora.enabled=true", "--set", "lora.rank=4",
                           "--set", "lora.target_modules=q_proj,v_proj")
    summary = json.loads(out)
    # 4 layers of q (256 -> 256) and v (256 -> 128): 4 x 4 x (512 + 384) adapter parameters.
    assert summary["trainable_parameters"] == 4 * 4 * (512 + 384)
    assert summary["parameters"] > 100 * summary["trainable_parameters"]
    assert code == 2 and any("set train.init_from" in p for p in summary["problems"])
