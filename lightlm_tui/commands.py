"""The command palette (Ctrl+P) offers every key of the current screen and the app as a command,
so an action can be found by name without knowing its key."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.app import SystemCommand
from textual.screen import Screen

# Already in Textual's own system commands, or the palette itself.
SKIPPED_ACTIONS = {"quit", "command_palette"}


def binding_commands(screen: Screen) -> Iterator[SystemCommand]:
    """One command per described, enabled binding active on `screen` (its own and the app's)."""
    seen: set[str] = set()
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not binding.description or not active.enabled or binding.action in SKIPPED_ACTIONS | seen:
            continue
        seen.add(binding.action)
        where = f"{screen.title} · " if screen.title else ""
        yield SystemCommand(
            binding.description,
            f"{where}key {binding.key_display or key}",
            partial(screen.app.run_action, binding.action, active.node),
        )
