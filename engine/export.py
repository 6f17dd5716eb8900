"""Hugging Face export: a folder `AutoModelForCausalLM.from_pretrained` loads, logits equal to ours.

The folder holds config.json (LlamaConfig; MixtralConfig or Glm4MoeConfig for a
mixture-of-experts run, see engine/model/hf_compat.py), model.safetensors (our weights under
the Hugging Face names; the output head is tied to the embedding) and the tokenizer. A run no
Hugging Face model computes exactly is refused with the reason, never written approximately. It is written in a
temporary folder and renamed into place, and it never replaces a folder it did not write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import save_file

from engine.errors import UserFacingError
from engine.generation import load_run
from engine.model.hf_compat import hf_architecture, hf_config_kwargs, hf_incompatibilities, to_hf_state_dict

MARKER = "lightlm_export.json"


class ExportError(UserFacingError):
    """The run cannot be exported as asked; the message says why."""


def export_hf(run_dir: Path, out_dir: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Export the run's latest checkpoint (or `checkpoint`) to `out_dir` (default RUN_DIR/export/hf)."""
    import transformers

    run = load_run(Path(run_dir), checkpoint)
    config = run.model.config
    reasons = hf_incompatibilities(config)
    if reasons:
        raise ExportError(f"cannot export this run as a Hugging Face model: {'; '.join(reasons)}.")
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "export" / "hf"
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ExportError(f"{out_dir} exists and holds files this tool did not write; choose an empty or new folder")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        eos = run.tokenizer.eos_id
        config_class, kwargs = hf_config_kwargs(config)
        hf_config = getattr(transformers, config_class)(**kwargs, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        hf_config.architectures = [hf_architecture(config)]
        hf_config.save_pretrained(staging)
        hf_weights = to_hf_state_dict(run.model.state_dict(), config)
        weights = {k: v.detach().contiguous().cpu() for k, v in hf_weights.items()}
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        run.tokenizer.save(staging)
        (staging / MARKER).write_text(json.dumps({"run_dir": str(run_dir), "step": run.step}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
