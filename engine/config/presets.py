"""Named starting configs: the TOML files in the repo's `presets/` folder.

The folder ships inside the wheel as the data package `lightlm_presets`; in a source checkout
(or an editable install) it is read in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config.problems import ConfigError, ConfigProblem
from engine.config.schema import RunConfig
from engine.config.toml_io import load_config


@dataclass(frozen=True)
class Preset:
    """A preset's name, the sentence at the top of its file, and where the file is."""

    name: str
    description: str
    path: Path


def presets_dir() -> Path:
    """The folder holding the preset TOML files."""
    in_checkout = Path(__file__).resolve().parents[2] / "presets"
    if in_checkout.is_dir():
        return in_checkout
    import lightlm_presets  # the installed copy (see pyproject's package-dir)

    return Path(next(iter(lightlm_presets.__path__)))


def _description(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(line for line in lines if line)


def list_presets() -> list[Preset]:
    """Every preset, sorted by name."""
    return [
        Preset(p.stem, _description(p), p) for p in sorted(presets_dir().glob("*.toml"))
    ]


def load_preset(name: str) -> RunConfig:
    """The RunConfig of preset `name`; an unknown name is a ConfigError listing the real ones."""
    path = presets_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(p.name for p in list_presets())
        raise ConfigError([ConfigProblem("", name, f"no preset named {name!r}; presets are {known}.")])
    config = load_config(path)
    return config if config.name else RunConfig(name=name, model=config.model, train=config.train, data=config.data)
