"""Run configuration: dataclasses, validation, TOML, overrides, presets.

Pure Python (no torch), so the UI can check a config on every keystroke.
"""

from engine.config.presets import Preset, list_presets, load_preset, presets_dir
from engine.config.problems import ConfigError, ConfigProblem
from engine.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.config.toml_io import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dumps_config,
    load_config,
    loads_config,
    save_config,
)
from engine.config.validate import field_problems, validate

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DataConfig",
    "ModelConfig",
    "Preset",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dumps_config",
    "field_problems",
    "list_presets",
    "load_config",
    "load_preset",
    "loads_config",
    "presets_dir",
    "save_config",
    "validate",
]
