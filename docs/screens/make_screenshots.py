"""Regenerate the SVG screenshots in docs/screens/ by driving the real app headless.

    python docs/screens/make_screenshots.py

Trains two small runs in a temporary folder first (about 20 s each), so the Monitor,
Playground, Runs and comparison screens show real data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from textual.widgets import DataTable

from engine.config import load_preset
from engine.runs.run_dir import EventLog
from engine.train.trainer import Trainer
from lightlm_tui.app import make_app

HERE = Path(__file__).resolve().parent
SIZE = (100, 32)


async def settle(pilot, condition, timeout=120.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if condition():
                break
        except Exception:
            pass
        if loop.time() > deadline:
            raise TimeoutError("the screen never got ready")
        await pilot.pause(0.1)
    await pilot.pause(0.5)


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        config = load_preset("tiny")
        config = dataclasses.replace(
            config, name="tiny-demo",
            train=dataclasses.replace(config.train, runs_dir=str(Path(scratch) / "runs"), checkpoint_every_steps=100),
            data=dataclasses.replace(config.data, cache_dir=str(Path(scratch) / "cache")),
        )
        run_dir = Path(scratch) / "runs" / "tiny-demo"
        log = EventLog(run_dir)
        Trainer(config, run_dir, log.write).run()
        log.close()
        # A second run, for the comparison: the same model at a higher learning rate.
        other = dataclasses.replace(config, name="tiny-lr3e-3",
                                    train=dataclasses.replace(config.train, learning_rate=3e-3))
        other_dir = Path(scratch) / "runs" / "tiny-lr3e-3"
        log = EventLog(other_dir)
        Trainer(other, other_dir, log.write).run()
        log.close()

        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: app.screen.query_one(DataTable).row_count > 0)
            app.save_screenshot("hardware.svg", str(HERE))
            screen = app.show_config(config)
            await settle(pilot, lambda: app.screen is screen and screen.query_one(DataTable).row_count > 0)
            app.save_screenshot("config.svg", str(HERE))
            await pilot.press("d")
            await settle(pilot, lambda: "works offline" in str(app.screen.query_one("#peek").render()))
            app.save_screenshot("data-source.svg", str(HERE))
            await pilot.press("escape")
            await settle(pilot, lambda: app.screen is screen)
            await pilot.press("b")
            await settle(pilot, lambda: app.screen.query_one("#budget"))
            app.screen.query_one("#budget").value = "5m"
            await pilot.press("enter")
            await settle(pilot, lambda: str(app.screen.query_one("#state").render()).startswith("plan for"))
            app.save_screenshot("budget.svg", str(HERE))
            await pilot.press("escape")
            await settle(pilot, lambda: app.screen is screen)
            runs = app.action_runs(Path(scratch) / "runs")
            await settle(pilot, lambda: app.screen is runs and runs.query_one(DataTable).row_count > 0)
            app.save_screenshot("runs.svg", str(HERE))
            await pilot.press("space", "down", "space", "c")
            await settle(pilot, lambda: app.screen is not runs and "-" not in [
                str(c) for c in app.screen.query_one(DataTable).get_row_at(0)[1:]])
            app.save_screenshot("compare.svg", str(HERE))
            await pilot.press("escape")
            await settle(pilot, lambda: app.screen is runs)
            playground = app.show_playground(run_dir)
            await settle(pilot, lambda: app.screen is playground)
            playground.query_one("#prompt").value = "def "
            playground.query_one("#seed").value = "1"
            playground.query_one("#max_new_tokens").value = "120"
            await pilot.press("enter")
            await settle(pilot, lambda: not playground.generating and playground.text)
            app.save_screenshot("playground.svg", str(HERE))

        app = make_app(monitor_dir=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: app.screen.view.finished is not None)
            app.save_screenshot("monitor.svg", str(HERE))
    print(f"wrote {', '.join(sorted(p.name for p in HERE.glob('*.svg')))} to {HERE}")


if __name__ == "__main__":
    asyncio.run(main())
