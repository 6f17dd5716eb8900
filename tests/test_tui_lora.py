"""Fine-tuning from the Runs screen: f opens the Config screen set up for LoRA on that run, the
data source picker first; starting it trains adapters only, and the Monitor says so."""

import json

import pytest
from textual.widgets import DataTable, Input, Static

from lightlm_tui.app import make_app
from lightlm_tui.dialogs.data_source import DataSourceDialog
from lightlm_tui.screens.config import ConfigScreen
from lightlm_tui.screens.monitor import MonitorScreen
from lightlm_tui.screens.runs import fine_tune_config_for
from test_tui_runs import make_run
from tui_helpers import wait_for


async def test_f_on_the_runs_screen_fine_tunes_with_lora(tiny_run_config, tmp_path):
    runs_dir = tmp_path / "runs"
    make_run(tiny_run_config(max_steps=120, eval_interval=0), runs_dir / "base")
    notes = tmp_path / "notes.jsonl"
    notes.write_text("\n".join(json.dumps({"text": f"Note {i}: the model reads the notes and writes them back, "
                                                   f"line {i % 7} of seven."}) for i in range(400)))
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.action_runs(runs_dir)
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count == 1, pilot)
        await pilot.press("f")
        # The data source picker comes first, over a Config screen set up to start from the run.
        await wait_for(lambda: isinstance(app.screen, DataSourceDialog), pilot)
        config_screen = app.screen_stack[-2]
        assert isinstance(config_screen, ConfigScreen)
        config = config_screen.config
        assert config.lora.enabled and config.train.init_from == str((runs_dir / "base").resolve())
        assert config.data.tokenizer == str((runs_dir / "base" / "tokenizer").resolve())
        app.screen.query_one("#source", Input).value = str(notes)
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(lambda: app.screen is config_screen, pilot)
        assert config_screen.config.data.source == str(notes)
        side = str(config_screen.query_one("#side", Static).render())
        assert "LoRA trainable" in side and "saves ~" in side
        assert config_screen.apply_settings({"train.max_steps": "30", "train.learning_rate": "1e-2",
                                             "train.eval_interval": "15", "lora.rank": "4"})
        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), pilot)
        monitor = app.screen
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert monitor.view.finished.status == "completed", monitor.view.finished.message
        assert 0 < monitor.view.trainable_params < monitor.view.params / 5
        metrics = str(monitor.query_one("#metrics", Static).render())
        assert f"trainable {monitor.view.trainable_params:,} of {monitor.view.params:,}" in metrics
        losses = [loss for _, loss in monitor.view.loss]
        assert sum(losses[-5:]) / 5 < losses[0] - 0.25


def test_a_lora_run_or_a_run_without_checkpoint_is_no_base(tmp_path, tiny_run_config):
    import dataclasses

    from engine.config import save_config
    from engine.config.schema import LoraConfig

    run = tmp_path / "fresh"
    save_config(tiny_run_config(), run / "config.toml")
    with pytest.raises(ValueError, match="has no checkpoint yet"):
        fine_tune_config_for(run)
    lora_run = tmp_path / "adapted"
    save_config(dataclasses.replace(tiny_run_config(), lora=LoraConfig(enabled=True)), lora_run / "config.toml")
    with pytest.raises(ValueError, match="is a LoRA run"):
        fine_tune_config_for(lora_run)
