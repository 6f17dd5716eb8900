"""Mixture-of-experts load: one row per layer, one shaded cell per expert, the layer's max-violation.

A cell's shade is the expert's load against the ideal (an equal share), so an even layer reads
as a row of the same middle shade and a collapsed one as one solid cell among empty ones; the
glyphs carry the shading on their own, so it reads in 16 colours and over SSH alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

# (upper bound of load / ideal, glyph, style): below half the ideal, below it, near it, above.
SHADES = ((0.5, "░", "blue"), (0.9, "▒", "cyan"), (1.1, "▓", "green"), (1.5, "█", "yellow"),
          (float("inf"), "█", "bold red"))
DEAD = ("·", "red")


def shade(load: float, ideal: float) -> tuple[str, str]:
    """The glyph and style of one expert's cell."""
    if load <= 0.0:
        return DEAD
    ratio = load / ideal
    for bound, glyph, style in SHADES:
        if ratio < bound:
            return glyph, style
    return SHADES[-1][1:]


def render_expert_load(loads: Sequence[Sequence[float]], max_violation: Sequence[float],
                       dead: Sequence[int], width: int) -> Text:
    """The panel's text for `width` columns: a heading, then per layer `L3 cells  vio 0.42`
    (and the dead experts when there are any). Cells narrow (3, 2, then 1 column) to fit."""
    experts = len(loads[0]) if loads else 0
    text = Text()
    if not experts:
        text.append("no expert loads yet (a mixture-of-experts run reports them every log step)", style="dim")
        return text
    ideal = 1.0 / experts
    label = len(f"L{len(loads) - 1}")
    tail = len("  vio 00.00  dead 00")
    cell = max(1, min(3, (width - label - 1 - tail) // experts))
    text.append(f"expert load per layer (ideal {ideal:.0%})\n", style="bold")
    for index, layer in enumerate(loads):
        text.append(f"L{index}".ljust(label) + " ")
        for load in layer:
            glyph, style = shade(load, ideal)
            text.append(glyph * cell, style=style)
        vio = max_violation[index] if index < len(max_violation) else 0.0
        text.append(f"  vio {vio:.2f}", style="bold red" if vio >= 1.0 else "")
        if index < len(dead) and dead[index]:
            text.append(f"  dead {dead[index]}", style="red")
        text.append("\n")
    text.append("░ low ▒ under ▓ even █ over · none", style="dim")
    return text


class ExpertLoadPanel(VerticalScroll):
    """Scrolls when there are more layers than rows; `show` redraws only when the figures change."""

    DEFAULT_CSS = """
    ExpertLoadPanel { height: 1fr; width: 1fr; padding: 0 1; }
    ExpertLoadPanel > Static { width: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._drawn: tuple = ()

    def compose(self):
        yield Static("", id="expert-load-text")

    def show(self, loads: Sequence[Sequence[float]] | None, max_violation: Sequence[float] | None,
             dead: Sequence[int] | None) -> None:
        width = max(20, self.size.width - 2)
        drawn = (tuple(map(tuple, loads or ())), tuple(max_violation or ()), width)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        self.query_one("#expert-load-text", Static).update(
            render_expert_load(loads or [], max_violation or [], dead or [], width))
