"""Hugging Face export: a folder `AutoModelForCausalLM.from_pretrained` loads, logits equal to ours.

The folder holds config.json (LlamaConfig; MixtralConfig or Glm4MoeConfig for a
mixture-of-experts run, see engine/model/hf_compat.py), model.safetensors (our weights under
the Hugging Face names; the output head is tied to the embedding) and the tokenizer. A run no
Hugging Face model computes exactly is refused with the reason, never written approximately. It is written in a
temporary folder and renamed into place, and it never replaces a folder it did not write.

A LoRA run exports merged (the adapters folded into the weights, in float32) and, with
`export_peft`, as peft's adapter folder beside its base model's Hugging Face folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file

from engine.config import ModelConfig, load_config
from engine.data.tokenizer import TextTokenizer
from engine.errors import UserFacingError
from engine.runs.trained_run import load_run
from engine.model.lora import is_adapted, merged_state_dict, peft_adapter_config, peft_state_dict
from engine.model.hf_compat import hf_architecture, hf_config_kwargs, hf_incompatibilities, to_hf_state_dict

MARKER = "lightlm_export.json"


class ExportError(UserFacingError):
    """The run cannot be exported as asked; the message says why."""


def export_hf(run_dir: Path, out_dir: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Export the run's latest checkpoint (or `checkpoint`) to `out_dir` (default RUN_DIR/export/hf).
    A LoRA run is exported merged: each adapter folded into its weight in float32, whatever the
    training precision, so the folder computes the adapted model (see also `export_peft`)."""
    run = load_run(Path(run_dir), checkpoint)
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "export" / "hf"
    weights = merged_state_dict(run.model) if is_adapted(run.model) else run.model.state_dict()
    return _write_hf_folder(out_dir, run.model.config, weights, run.tokenizer,
                            {"run_dir": str(run_dir), "step": run.step, "merged_lora": is_adapted(run.model)})


def export_hf_and_adapters(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, tuple[Path, Path] | None]:
    """What `lightlm-tui export RUN_DIR` writes in Hugging Face form: the (merged) model folder,
    and for a LoRA run also its peft adapter folder and base folder (`export_peft`)."""
    written = export_hf(run_dir, out_dir)
    run_config = load_config(Path(run_dir) / "config.toml")
    return written, export_peft(run_dir) if run_config.lora.enabled else None


def export_peft(run_dir: Path, out_dir: Path | None = None, checkpoint: Path | None = None,
                base_dir: Path | None = None) -> tuple[Path, Path]:
    """A LoRA run's adapters as a peft adapter folder (default RUN_DIR/export/peft), and its base
    as a Hugging Face folder (default RUN_DIR/export/base-hf) that the adapter config names:
    `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)` computes
    the adapted model. Returns (adapter folder, base folder)."""
    from safetensors.torch import load_file

    run = load_run(Path(run_dir), checkpoint)
    if not is_adapted(run.model) or run.config is None:
        raise ExportError(f"{run_dir} is not a LoRA run (lora.enabled is false): it has no adapters to export; "
                          "its Hugging Face export holds the whole model")
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "export" / "peft"
    base_dir = Path(base_dir) if base_dir else Path(run_dir) / "export" / "base-hf"
    base = Path(run.config.train.init_from)
    base_weights = load_file(base / "model.safetensors")  # load_run checked it against its recorded hash
    _write_hf_folder(base_dir, run.model.config, base_weights, run.tokenizer,
                     {"run_dir": str(base.parent.parent), "checkpoint": str(base), "base_of": str(run_dir)})
    adapter_config = peft_adapter_config(run.config.lora, str(base_dir.resolve()), run.model.lora_paths)
    with _staged(out_dir) as staging:
        save_file(peft_state_dict(run.model), staging / "adapter_model.safetensors", metadata={"format": "pt"})
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        run.tokenizer.save(staging)
        (staging / MARKER).write_text(json.dumps({"run_dir": str(run_dir), "step": run.step, "peft": True}, indent=2))
    return out_dir, base_dir


def _write_hf_folder(out_dir: Path, config: ModelConfig, weights: dict, tokenizer: TextTokenizer,
                     record: dict) -> Path:
    """config.json, model.safetensors (our `weights` under the Hugging Face names) and the
    tokenizer, written as one folder that replaces only a folder this tool wrote."""
    import transformers

    reasons = hf_incompatibilities(config)
    if reasons:
        raise ExportError(f"cannot export this run as a Hugging Face model: {'; '.join(reasons)}.")
    with _staged(out_dir) as staging:
        eos = tokenizer.eos_id
        config_class, kwargs = hf_config_kwargs(config)
        hf_config = getattr(transformers, config_class)(**kwargs, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        hf_config.architectures = [hf_architecture(config)]
        hf_config.save_pretrained(staging)
        hf_weights = to_hf_state_dict(weights, config)
        tensors = {k: v.detach().contiguous().cpu() for k, v in hf_weights.items()}
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save(staging)
        (staging / MARKER).write_text(json.dumps(record, indent=2))
    return out_dir


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `out_dir`, renamed into place when the block ends without error."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ExportError(f"{out_dir} exists and holds files this tool did not write; choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
