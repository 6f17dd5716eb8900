"""The Playground, driven with the pilot: a prompt in, streamed text out, bad settings refused."""

from textual.widgets import Static

from engine.runs.run_dir import EventLog
from engine.train.trainer import Trainer
from lightlm_tui.app import make_app
from lightlm_tui.screens.playground import PlaygroundScreen
from tui_helpers import wait_for


def trained_run(config, run_dir):
    log = EventLog(run_dir)
    Trainer(config, run_dir, log.write, threads=1).run()
    log.close()
    return run_dir


async def test_playground_returns_text_from_the_latest_checkpoint(tiny_run_config, tmp_path):
    from engine.runs.trained_run import load_run
    from engine.use.generate import SamplingSettings, generate_text
    from engine.runs.checkpoint import complete_checkpoints

    # Checkpoints at steps 10 and 20: the Playground must sample from step 20's weights.
    run_dir = trained_run(tiny_run_config(max_steps=20, eval_interval=0, checkpoint_every_steps=10), tmp_path / "run")
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.screen.view.finished is not None, pilot)
        await pilot.press("g")
        await wait_for(lambda: isinstance(app.screen, PlaygroundScreen), pilot)
        screen = app.screen
        screen.query_one("#prompt").value = "The "
        screen.query_one("#max_new_tokens").value = "30"
        screen.query_one("#seed").value = "1"
        await pilot.press("enter")
        await wait_for(lambda: not screen.generating and screen.text, pilot)
        state = str(screen.query_one("#state", Static).render())
        assert state == f"done: {len(screen.text)} characters"
        assert str(screen.query_one("#output", Static).render()) == "The " + screen.text
    # Sampling is seeded, so the engine's own generate on the same run, prompt and settings
    # (the screen's defaults: temperature 0.8, top-k 50, top-p 0.95) gives the same text.
    settings = SamplingSettings(max_new_tokens=30, temperature=0.8, top_k=50, top_p=0.95, seed=1)
    assert screen.text == generate_text(load_run(run_dir), "The ", settings)
    earlier = [c for c in complete_checkpoints(run_dir) if c.name == "step_000010"]
    assert earlier and screen.text != generate_text(load_run(run_dir, earlier[0]), "The ", settings)


async def test_bad_sampling_settings_are_refused(tiny_run_config, tmp_path):
    run_dir = trained_run(tiny_run_config(max_steps=5, eval_interval=0), tmp_path / "run")
    app = make_app(monitor_dir=run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.show_playground(run_dir)
        await wait_for(lambda: app.screen is screen and screen.is_mounted, pilot)
        await pilot.pause()
        screen.query_one("#temperature").value = "hot"
        await pilot.press("enter")
        await pilot.pause()
        assert "not started: temp must be a number, not 'hot'" in str(screen.query_one("#state", Static).render())
        assert not screen.generating
