"""The config reference as Markdown tables, generated from the schema's metadata.

`python -m engine.config.reference` prints what docs/configuration.md's reference holds;
`tests/test_docs.py` fails when the two drift apart.
"""

from __future__ import annotations

import dataclasses

from engine.config.schema import SECTIONS, RunConfig, describe_setting
from engine.config.toml_io import config_to_dict


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_default_text(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def reference_markdown() -> str:
    """One table per TOML section: key, default, meaning (with allowed values and what 0 means)."""
    defaults = config_to_dict(RunConfig())
    parts = []
    for section, cls in SECTIONS.items():
        rows = [f"### `[{section}]`\n", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            meaning = describe_setting(f.metadata, quote=lambda choice: f"`{choice}`")
            rows.append(f"| `{f.name}` | `{_default_text(defaults[section][f.name])}` | {meaning} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
