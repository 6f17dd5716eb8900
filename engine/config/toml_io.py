"""RunConfig <-> TOML, and `--set section.key=value` overrides.

Reading refuses unknown sections and keys (with a "did you mean") and values of the wrong
type, and reports all of them at once. Keys a file leaves out take their defaults, so a
preset can say only what it changes; the run directory always gets the full resolved file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from engine.config.problems import ConfigError, ConfigProblem
from engine.config.schema import SECTIONS, RunConfig, section_fields
from engine.config.values import coerce, field_type, parse_text_value, suggest_key

TOP_LEVEL_KEYS = ("name",)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as plain TOML-ready data (tuples become lists)."""
    out: dict[str, Any] = {"name": config.name}
    for section in SECTIONS:
        values = getattr(config, section)
        out[section] = {
            f.name: list(v) if isinstance(v := getattr(values, f.name), tuple) else v
            for f in dataclasses.fields(values)
        }
    return out


def config_from_dict(data: dict[str, Any], source: str = "") -> RunConfig:
    """Build a RunConfig from parsed TOML; raise ConfigError listing every bad key or value."""
    problems: list[ConfigProblem] = []
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    name = ""
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                problems.append(ConfigProblem(key, value, f"must be a table: write [{key}] above its keys."))
                continue
            for sub_key, sub_value in value.items():
                problems += _take(sections[key], key, sub_key, sub_value)
        elif key == "name":
            if isinstance(value, str):
                name = value
            else:
                problems.append(ConfigProblem("name", value, "expected a string."))
        elif isinstance(value, dict):
            options = ", ".join(f"[{s}]" for s in SECTIONS)
            problems.append(ConfigProblem("", value, f"unknown section [{key}]; sections are {options}."))
        else:
            hint = suggest_key(None, key)
            problems.append(ConfigProblem(
                key, value,
                f"unknown top-level key{hint}; settings belong under [model], [train] or [data].",
            ))
    if problems:
        raise ConfigError(problems, source)
    return RunConfig(name=name, **{s: SECTIONS[s](**sections[s]) for s in SECTIONS})


# Settings that no longer exist, with what replaced them. Old run folders' config.toml files
# hold them, so the value they had by default still loads (and is dropped); any other value is
# an error that says what to use now.
RETIRED = {
    ("train", "use_ddp"): (False, "DDP is on whenever a run has several processes: `lightlm-tui train --nproc N` "
                                  "(or torchrun); remove use_ddp"),
    # LoRA settings have their own [lora] section.
    ("train", "use_lora"): (False, "LoRA settings live in the [lora] section now: write enabled = true under [lora]"),
    ("train", "lora_rank"): (8, "LoRA settings live in the [lora] section now: write rank under [lora]"),
    ("train", "lora_alpha"): (16.0, "LoRA settings live in the [lora] section now: write alpha under [lora]"),
    ("train", "lora_target_modules"): (["q_proj", "v_proj"], "LoRA settings live in the [lora] section now: "
                                                             "write target_modules under [lora]"),
}


def _take(target: dict[str, Any], section: str, key: str, value: Any) -> list[ConfigProblem]:
    if (section, key) in RETIRED:
        harmless, replacement = RETIRED[(section, key)]
        return [] if value == harmless else [ConfigProblem(f"{section}.{key}", value, f"{replacement}.")]
    if key not in section_fields(section):
        hint = suggest_key(section, key)
        return [ConfigProblem(f"{section}.{key}", value, f"unknown setting{hint}.")]
    try:
        target[key] = coerce(field_type(section, key), value)
    except ValueError as exc:
        return [ConfigProblem(f"{section}.{key}", value, f"{exc}.")]
    return []


def loads_config(text: str, source: str = "") -> RunConfig:
    """Parse TOML text into a RunConfig."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", None, f"not valid TOML: {exc}.")], source) from None
    return config_from_dict(data, source)


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a TOML run config; a missing or unreadable file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", None, f"no such file: {path}.")], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", None, f"cannot read {path}: {exc}.")], str(path)) from None
    return loads_config(text, str(path))


def dumps_config(config: RunConfig, header: str = "") -> str:
    """TOML text for `config`; `header` lines are written as comments on top."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + tomli_w.dumps(config_to_dict(config))


def save_config(config: RunConfig, path: str | os.PathLike[str], header: str = "") -> Path:
    """Write `config` to `path` atomically (a crash never leaves half a file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dumps_config(config, header))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def apply_overrides(config: RunConfig, assignments: list[str]) -> RunConfig:
    """A copy of `config` with `section.key=value` assignments applied (a bare key works when
    only one section has it). Raises ConfigError listing every bad assignment."""
    problems: list[ConfigProblem] = []
    changes: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    name = config.name
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(ConfigProblem(
                "", assignment, f"cannot read override {assignment!r}; write it as section.key=value, "
                "e.g. train.learning_rate=3e-4.",
            ))
            continue
        if key == "name":
            name = text.strip()
            continue
        section, dot, field_name = key.partition(".")
        if not dot:
            owners = [s for s in SECTIONS if key in section_fields(s)]
            if len(owners) == 1:
                section, field_name = owners[0], key
            elif len(owners) > 1:
                choices = " or ".join(f"{s}.{key}" for s in owners)
                problems.append(ConfigProblem(key, text, f"ambiguous; write {choices}."))
                continue
            else:
                problems.append(ConfigProblem(key, text, f"unknown setting{suggest_key(None, key)}."))
                continue
        if section not in SECTIONS:
            problems.append(ConfigProblem(key, text, f"unknown setting{suggest_key(None, field_name)}."))
            continue
        if field_name not in section_fields(section):
            problems.append(ConfigProblem(key, text, f"unknown setting{suggest_key(section, field_name)}."))
            continue
        try:
            changes[section][field_name] = parse_text_value(field_type(section, field_name), text)
        except ValueError as exc:
            problems.append(ConfigProblem(key, text.strip(), f"{exc}."))
    if problems:
        raise ConfigError(problems, "--set")
    return dataclasses.replace(
        config,
        name=name,
        **{s: dataclasses.replace(getattr(config, s), **changes[s]) for s in SECTIONS if changes[s]},
    )
