"""Several runs' curves overlaid on one plot, each in its run's colour (the legend is the
screen's: a one-row list of coloured names reads better at 80x24 than a box over the curves)."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter

from lightlm_tui.curves import log10_safe
from lightlm_tui.run_view import decimate_points
from lightlm_tui.widgets.loss_plot import LogAxisFormatter


class ComparePlot(PlotWidget):
    """Never focused (its zoom keys stay out of the footer); draws at most about two points per
    column of each run, so 5 runs of 10,000 reports cost what 5 short runs do."""

    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_pan_and_zoom=False, **kwargs)
        self.log_y = False

    def columns(self) -> int:
        """How many points across a run's curve is cut to (about two per column)."""
        return max(10, self.size.width - 8)

    def show(self, series: Sequence[tuple[str, tuple[list[float], list[float]], bool]], x_label: str) -> None:
        """`series`: (colour, (xs, ys) already decimated, as points rather than a line) for each run."""
        self.clear()
        x_max = 0.0
        self.set_y_formatter(LogAxisFormatter() if self.log_y else NumericAxisFormatter())
        for colour, (xs, ys), scatter in series:
            if not xs:
                continue
            if self.log_y:
                ys = log10_safe(ys)
            x_max = max(x_max, xs[-1])
            if scatter or len(xs) < 3:
                self.scatter(xs, ys, marker="*", marker_style=colour)
            if len(xs) > 1:
                self.plot(xs, ys, line_style=colour, hires_mode=HiResMode.BRAILLE)
        self.set_xlabel(x_label)
        self.set_xlimits(0, x_max or 1)


def decimated(points: list[tuple[float, float]], columns: int) -> tuple[list[float], list[float]]:
    """`points` in x order (a resumed run may repeat steps), cut to about two per column."""
    return decimate_points(sorted(points), columns)
