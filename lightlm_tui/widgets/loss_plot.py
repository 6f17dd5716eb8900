"""Train loss (a line) and val loss (points) against step, with axes, for reading at a glance."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plot import HiResMode, PlotWidget

from lightlm_tui.run_view import decimate_points


class LossPlot(PlotWidget):
    """Never focused, so the plot's zoom / pan keys stay out of the footer. `show` redraws only
    when there are new points, and draws at most about two points per column."""

    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_pan_and_zoom=False, **kwargs)
        self._drawn: tuple = ()  # what was last drawn: (points, last point) of each series

    def show(self, train: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]], total_steps: int) -> bool:
        """Draw the series; returns False when nothing changed since the last call. Series are
        capped deques, so their length stops changing on a long run: the last point tells."""
        drawn = (len(train), train[-1] if train else None, len(val), val[-1] if val else None)
        if drawn == self._drawn or not train:
            return False
        self._drawn = drawn
        self.clear()
        steps, losses = decimate_points(train, max(10, self.size.width - 8))
        self.plot(steps, losses, line_style="bright_blue", hires_mode=HiResMode.BRAILLE, label="train")
        if val:
            self.scatter([p[0] for p in val], [p[1] for p in val], marker="*", marker_style="bright_yellow", label="val")
        self.set_xlabel("step")
        self.set_xlimits(0, max(total_steps, steps[-1]))
        return True
