"""Starting a run from another run's weights (fine-tuning), and loading a LoRA run's weights.

`train.init_from` names a run directory (its latest complete checkpoint) or one checkpoint
folder. The new run takes the base's model shape and tokenizer (`finetune_config`), records
the checkpoint it started from and the SHA-256 of its weights, and refuses a base that does not
fit (`base_problems`). A LoRA run's checkpoints hold only the adapters plus that reference, so
loading one (`load_model_weights`) reads the base first and refuses it if it changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from engine.config import ConfigError, RunConfig, load_config
from engine.config.finetune import FREE_MODEL_FIELDS, fine_tune_settings
from engine.errors import UserFacingError
from engine.runs.checkpoint import REQUIRED_FILES, Checkpoint, complete_checkpoints, latest_name

WEIGHTS = "model.safetensors"


class InitFromError(UserFacingError):
    """The run to start from cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class BaseWeights:
    """The checkpoint a fine-tune starts from: where it is, its weights' hash, its run's config."""

    run_dir: Path
    checkpoint: Path
    sha256: str
    config: RunConfig

    @property
    def tokenizer_dir(self) -> Path:
        return self.run_dir / "tokenizer"


def weights_sha256(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's weights file."""
    with open(Path(checkpoint) / WEIGHTS, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def resolve_base(path: str | Path) -> BaseWeights:
    """The checkpoint `path` names: a run directory's latest complete checkpoint, or a checkpoint
    folder itself. Refuses a folder that is neither, a run with no complete checkpoint, and a LoRA
    run (its checkpoints hold adapters, not a model)."""
    path = Path(path).expanduser()
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        checkpoint, run_dir = path, path.parent.parent
        missing = [f for f in REQUIRED_FILES if not (checkpoint / f).is_file()]
        if missing:
            raise InitFromError(f"cannot start from {checkpoint}: the checkpoint is incomplete ({', '.join(missing)} "
                                "missing); name another checkpoint or the run directory")
    elif (path / "config.toml").is_file():
        run_dir = path
        complete = complete_checkpoints(run_dir)
        if not complete:
            raise InitFromError(f"cannot start from {run_dir}: it has no complete checkpoint yet; train it (or "
                                f"`lightlm-tui resume {run_dir}`) until it saves one")
        latest = latest_name(run_dir)
        named = [p for p in complete if p.name == latest]
        checkpoint = named[0] if named else complete[-1]
    else:
        raise InitFromError(f"cannot start from {path}: it is not a run directory (no config.toml) or a checkpoint "
                            "folder (RUN_DIR/checkpoints/NAME)")
    if not (run_dir / "tokenizer").is_dir():
        raise InitFromError(f"cannot start from {run_dir}: its tokenizer folder is missing, and the weights only "
                            "make sense with the tokens they were trained on")
    try:
        config = load_config(run_dir / "config.toml")
    except ConfigError as exc:
        raise InitFromError(f"cannot start from {run_dir}: {exc}") from None
    if config.lora.enabled:
        raise InitFromError(f"cannot start from {run_dir}: it is a LoRA run, whose checkpoints hold adapters only; "
                            f"start from its base ({config.train.init_from}) instead")
    return BaseWeights(run_dir.resolve(), checkpoint.resolve(), weights_sha256(checkpoint), config)


def finetune_config(config: RunConfig, base: BaseWeights) -> RunConfig:
    """`config` set up to start from `base`: the base's model shape (keeping this config's
    dropout and cache settings), its tokenizer folder, and the reference to the weights."""
    return fine_tune_settings(config, base.config, base.run_dir, str(base.checkpoint), base.sha256)


def base_problems(config: RunConfig, base: BaseWeights) -> list[str]:
    """Why `config` cannot start from `base` (empty when it can): a model shape or a tokenizer
    that differs from the base's, or base weights that changed since the hash was recorded."""
    problems = []
    ours, theirs = dataclasses.asdict(config.model), dataclasses.asdict(base.config.model)
    differ = [f"{k} = {ours[k]!r} (the base has {theirs[k]!r})" for k in ours
              if k not in FREE_MODEL_FIELDS and ours[k] != theirs[k]]
    if differ:
        problems.append(f"the model's shape differs from the base run {base.run_dir}'s: "
                        f"model.{', model.'.join(differ)}; "
                        "a fine-tune keeps the base's shape (train --init-from sets it)")
    spec, base_spec = config.data.tokenizer, base.config.data.tokenizer
    same_folder = Path(spec).expanduser().resolve() == base.tokenizer_dir.resolve() if spec.strip() else False
    if not same_folder and not (spec == base_spec and spec != "bpe"):
        why = " (bpe trains a new tokenizer on the new data)" if spec == "bpe" else ""
        problems.append(f"data.tokenizer is {spec!r}{why} but the base run's weights were trained on its own "
                        "tokenizer; "
                        f"set data.tokenizer = {str(base.tokenizer_dir)!r} (train --init-from sets it)")
    recorded = config.train.init_from_sha256
    if recorded and recorded != base.sha256:
        problems.append(f"the base checkpoint {base.checkpoint} changed since this run started from it (its weights' "
                        f"SHA-256 was {recorded[:12]}..., now {base.sha256[:12]}...); start a new fine-tune from it")
    return problems


def load_base_weights(model: torch.nn.Module, checkpoint: Path, sha256: str = "") -> None:
    """Load a base checkpoint's weights into `model` (which may carry adapters: only their keys
    may be missing). With `sha256`, refuse weights that changed since it was recorded."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / WEIGHTS).is_file():
        raise InitFromError(f"the base checkpoint {checkpoint} this run starts from is gone (deleted or pruned); "
                            "restore it, or start a new fine-tune from another checkpoint")
    if sha256 and weights_sha256(checkpoint) != sha256:
        raise InitFromError(f"the base checkpoint {checkpoint} changed since this run started from it (its weights' "
                            "SHA-256 differs from the one recorded); restore it, or start a new fine-tune from it")
    try:
        weights = load_file(checkpoint / WEIGHTS, device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as exc:
        raise InitFromError(f"the base checkpoint {checkpoint}: weights are damaged ({exc})") from None
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith((".lora_A", ".lora_B"))]
    if missing or result.unexpected_keys:
        raise InitFromError(f"the base checkpoint {checkpoint} does not fit this model (missing "
                            f"{', '.join(missing[:3]) or 'nothing'}, "
                            f"unexpected {', '.join(result.unexpected_keys[:3]) or 'nothing'})")


def base_reference(config: RunConfig) -> dict[str, str]:
    """What a checkpoint records about the weights its run started from (empty: from scratch)."""
    if not config.train.init_from:
        return {}
    return {"checkpoint": config.train.init_from, "sha256": config.train.init_from_sha256}


def load_model_weights(model: torch.nn.Module, config: RunConfig, checkpoint: Checkpoint) -> None:
    """Put a checkpoint's weights into `model` (built from `config`): the whole model, or for a
    LoRA run the base it references (hash checked) and then the adapters the checkpoint holds."""
    if not config.lora.enabled:
        model.load_state_dict(checkpoint.model_state)
        return
    reference = checkpoint.state.notes.base or base_reference(config)
    if not reference.get("checkpoint"):
        raise InitFromError(f"checkpoint {checkpoint.path} is a LoRA checkpoint without a reference to its base "
                            "weights; it cannot be loaded")
    load_base_weights(model, Path(reference["checkpoint"]), reference.get("sha256", ""))
    result = model.load_state_dict(checkpoint.model_state, strict=False)
    if result.unexpected_keys:
        raise InitFromError(f"checkpoint {checkpoint.path} holds weights this model does not have "
                            f"({', '.join(result.unexpected_keys[:3])}); was lora changed since it was saved?")
    adapters = [k for k in model.state_dict() if k.endswith((".lora_A", ".lora_B"))]
    absent = [k for k in adapters if k not in checkpoint.model_state]
    if absent:
        raise InitFromError(f"checkpoint {checkpoint.path} lacks adapters this model has ({', '.join(absent[:3])}); "
                            "was lora.target_modules changed since it was saved?")
