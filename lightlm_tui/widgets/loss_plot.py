"""Train loss (a line) and val loss (points) against step, with axes, for reading at a glance.

The x axis follows the data (a stopped or early run fills the width); the planned end is named
under the axis, and drawn as a line once the data reaches it. `log_y` draws the y axis on a
log scale (ticks still read as losses); `smoothing` applies a debiased EMA to the train curve
only: the val points are always drawn as measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import AxisFormatter, NumericAxisFormatter

from lightlm_tui.curves import ema_debiased, log10_safe, smoothing_label
from lightlm_tui.run_view import decimate_points


class LogAxisFormatter(AxisFormatter):
    """Ticks for values plotted as log10(v): placed at round values of v, labelled with v."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        low, high = 10 ** min_, 10 ** max_
        if high <= low:
            return [min_]
        ticks = NumericAxisFormatter().get_ticks(low, high, max_ticks)
        return [math.log10(t) for t in ticks if t > 0]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{10 ** t:.3g}" for t in ticks]


class LossPlot(PlotWidget):
    """Never focused, so the plot's zoom / pan keys stay out of the footer. `show` redraws only
    when there are new points or the drawing mode changed, and draws at most about two points
    per column."""

    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_pan_and_zoom=False, **kwargs)
        self._drawn: tuple = ()  # what was last drawn: (points, last point) of each series, and the mode
        self.log_y = False
        self.smoothing = 0.0  # EMA weight on the train curve; 0 = raw
        self.x_max = 0.0  # the right end of the x axis as last drawn (the data's last step)

    def mode_text(self) -> str:
        """How the curve is drawn, for a label: "log y, EMA 0.9"."""
        return ", ".join(([("log y")] if self.log_y else []) + [smoothing_label(self.smoothing)])

    def show(self, train: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]], total_steps: int) -> bool:
        """Draw the series; returns False when nothing changed since the last call. Series are
        capped deques, so their length stops changing on a long run: the last point tells."""
        drawn = (len(train), train[-1] if train else None, len(val), val[-1] if val else None,
                 total_steps, self.log_y, self.smoothing, self.size.width)
        if drawn == self._drawn or not train:
            return False
        self._drawn = drawn
        self.clear()
        points = list(train)
        if self.smoothing > 0:  # before decimation, so the average sees every report
            points = list(zip([p[0] for p in points], ema_debiased([p[1] for p in points], self.smoothing)))
        steps, losses = decimate_points(points, max(10, self.size.width - 8))
        val_steps, val_losses = [p[0] for p in val], [p[1] for p in val]
        if self.log_y:
            losses, val_losses = log10_safe(losses), log10_safe(val_losses)
        self.set_y_formatter(LogAxisFormatter() if self.log_y else NumericAxisFormatter())
        self.plot(steps, losses, line_style="bright_blue", hires_mode=HiResMode.BRAILLE, label="train")
        if val:
            self.scatter(val_steps, val_losses, marker="*", marker_style="bright_yellow", label="val")
        last = max(steps[-1], val_steps[-1] if val_steps else 0)
        self.x_max = max(1, last)
        if total_steps and total_steps <= self.x_max:
            self.x_max = max(self.x_max, total_steps)
            self.add_v_line(total_steps, "dim white")
            self.set_xlabel(f"step (planned end {total_steps:,} marked)")
        elif total_steps:
            self.set_xlabel(f"step (planned end {total_steps:,} ->)")
        else:
            self.set_xlabel("step")
        self.set_xlimits(0, self.x_max)
        return True
