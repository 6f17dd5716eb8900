"""How configuration problems are reported: one sentence each, naming field, value and fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config. `field` is dotted ("model.num_heads"), or "" for the file."""

    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        if not self.field:
            return self.message
        return f"{self.field} = {self.value!r}: {self.message}"


class ConfigError(ValueError):
    """A config that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.problems)} problem(s){where}:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
