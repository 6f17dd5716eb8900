"""The Config screen, driven with the pilot: edit, refuse, list problems, presets, save, start."""


from textual.widgets import DataTable, Static

from engine.config import load_config, load_preset
from lightlm_tui.app import make_app
from lightlm_tui.screens.config import ConfigScreen
from lightlm_tui.screens.monitor import MonitorScreen
from tui_helpers import wait_for




def cell(screen, key) -> str:
    table = screen.query_one(DataTable)
    return str(table.get_cell(key, "value"))


def message(screen) -> str:
    return str(screen.query_one("#message", Static).render())


async def edit(pilot, screen, key, text):
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.press("enter")
    await pilot.pause()
    editor = screen.query_one("#editor")
    editor.value = text
    await pilot.press("enter")
    await pilot.pause()


async def open_config(app, pilot, config=None) -> ConfigScreen:
    from textual.css.query import NoMatches

    screen = app.show_config(config)

    def ready() -> bool:
        try:
            return app.screen is screen and screen.query_one(DataTable).row_count > 0
        except NoMatches:  # still mounting
            return False

    await wait_for(ready, pilot)
    return screen


async def test_hardware_enter_continues_to_config_on_the_laptop_preset():
    """... being planned for 5 minutes on this machine (tests/test_tui_first_run.py follows the plan)."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.screen.query_one(DataTable).row_count > 0, pilot)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ConfigScreen), pilot)
        await pilot.pause()
        screen = app.screen
        assert (screen.planning_for == 300 and screen.config.name == "laptop"
                and cell(screen, "model.num_dims") == "128") or screen.config.name == "plan-5m"


async def test_editing_a_cell_changes_the_saved_toml(tmp_path):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot)
        await edit(pilot, screen, "model.num_layers", "3")
        assert cell(screen, "model.num_layers") == "3"
        await edit(pilot, screen, "train.learning_rate", "1e-3")
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("train.use_compile"))
        await pilot.press("enter")  # booleans toggle
        await pilot.pause()
        await pilot.press("w")
        await pilot.pause()
        screen.query_one("#editor").value = str(tmp_path / "edited.toml")
        await pilot.press("enter")
        await pilot.pause()
    saved = load_config(tmp_path / "edited.toml")
    assert saved.model.num_layers == 3 and saved.train.learning_rate == 1e-3 and saved.train.use_compile is True


async def test_invalid_heads_shows_the_message_and_blocks_start():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot, load_preset("tiny"))
        await edit(pilot, screen, "model.num_heads", "7")
        assert "model.num_heads = 7: num_dims (64) must be divisible by num_heads" in message(screen)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen)  # no run started
        await edit(pilot, screen, "model.num_heads", "4")
        assert "config ok" in message(screen)


async def test_out_of_bounds_and_wrong_type_values_are_not_applied():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot, load_preset("tiny"))
        await edit(pilot, screen, "model.num_layers", "-2")
        assert "not applied: model.num_layers = -2: must be at least 1." in message(screen)
        await edit(pilot, screen, "train.batch_size", "lots")
        assert "not applied" in message(screen) and "expected an integer" in message(screen)
        assert screen.config.model.num_layers == 1 and screen.config.train.batch_size == 4
        assert cell(screen, "model.num_layers") == "1"


async def test_loading_a_preset_fills_the_table():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        options = app.screen.query_one("OptionList")
        options.highlighted = [o.id for o in options.options].index("tiny")
        await pilot.press("enter")
        await wait_for(lambda: screen.config.name == "tiny", pilot)
        await pilot.pause()
        assert cell(screen, "model.num_dims") == "64" and cell(screen, "train.batch_size") == "4"


async def test_starting_tiny_from_the_ui_trains_to_the_end(tiny_run_config):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        config = tiny_run_config(max_steps=60, eval_interval=30)
        await open_config(app, pilot, config)
        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), pilot)
        monitor = app.screen
        await wait_for(lambda: monitor.view.finished is not None, pilot)
        assert monitor.view.finished.status == "completed" and monitor.view.last.step == 60
        assert monitor.view.loss[-1][1] < monitor.view.loss[0][1]


async def test_an_enum_setting_is_picked_from_its_choices_and_each_row_explains_itself():
    from lightlm_tui.dialogs.choice import ChoiceDialog

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot)
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("model.norm_type"))
        await pilot.pause()
        help_line = str(screen.query_one("#help", Static).render())
        assert "model.norm_type: Normalisation layer. One of: rmsnorm, layernorm" in help_line
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ChoiceDialog), pilot)
        await pilot.press("down", "enter")
        await wait_for(lambda: app.screen is screen, pilot)
        assert screen.config.model.norm_type == "layernorm" and cell(screen, "model.norm_type") == "layernorm"
        table.move_cursor(row=table.get_row_index("train.learning_rate"))
        await pilot.pause()
        assert "Above 0." in str(screen.query_one("#help", Static).render())


async def test_the_command_palette_offers_the_screens_actions_by_name():
    from lightlm_tui.dialogs.choice import ChoiceDialog

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_config(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"presets")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ChoiceDialog), pilot)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen, pilot)
