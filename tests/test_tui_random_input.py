"""The app under random input: a few hundred random keys and resizes down to 40x12 on every
screen, with a run training. Nothing may raise, and the run must go on untouched."""

import random

from lightlm_tui.app import make_app
from lightlm_tui.screens.hardware import HardwareScreen
from tui_helpers import wait_for

# Keys a person might hit by mistake. Left out: the ones whose whole point is to end or start
# work (q / ctrl+c quit, x stops the run, t starts another, r resumes one, f fine-tunes).
KEYS = list("abcdeghijklmnopsuvwyz0123456789 -.,/?") + [
    "enter", "escape", "tab", "shift+tab", "up", "down", "left", "right", "pageup", "pagedown", "home", "end",
    "backspace", "delete", "question_mark", "f1", "ctrl+p",
]
SIZES = [(40, 12), (80, 24), (60, 16), (120, 40), (41, 13), (100, 30)]


async def test_random_keys_and_resizes_on_every_screen_leave_the_run_training(tiny_run_config, tmp_path):
    rng = random.Random(20261126)
    config = tiny_run_config(max_steps=1_000_000, eval_interval=0, log_interval=5, runs_dir=str(tmp_path / "runs"))
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.start_run(config)
        await wait_for(lambda: monitor.view.last is not None, pilot)
        openers = {
            "monitor": lambda: None,
            "config": lambda: app.show_config(config),
            "budget": lambda: (app.show_config(config), app.screen.action_budget()),
            "data source": lambda: (app.show_config(config), app.screen.action_data_source()),
            "runs": lambda: app.action_runs(tmp_path / "runs"),
            "hardware": lambda: app.push_screen(HardwareScreen()),
            "playground": lambda: app.show_playground(tmp_path / "runs"),
            "help": app.action_help,
        }
        pressed = 0
        for name, open_screen in openers.items():
            open_screen()
            await pilot.pause(0.2)
            for index in range(150):
                if index % 25 == 0:
                    await pilot.resize_terminal(*rng.choice(SIZES))
                await pilot.press(rng.choice(KEYS))
                pressed += 1
            while app.screen is not monitor and len(app.screen_stack) > 2:  # back to the Monitor
                app.pop_screen()
                await pilot.pause()
            assert app.return_code is None, f"the app ended during the keys on the {name} screen"
        assert pressed == 150 * len(openers)
        assert app.screen is monitor and monitor.bridge.busy  # the run is still training
        if monitor.view.paused:  # a random p paused it: that is the key's job
            monitor.bridge.control("resume")
        step = monitor.view.last.step
        await wait_for(lambda: monitor.view.last.step > step, pilot)  # and it goes on
        monitor.bridge.control("stop")
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert monitor.view.finished.status == "stopped"
