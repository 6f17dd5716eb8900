"""The data-source picker on the Config screen, driven with the pilot, and the peek behind it."""

import json

from textual.widgets import Input, Static

from engine.data.peek import peek_source
from lightlm_tui.app import make_app
from lightlm_tui.dialogs.data_source import DataSourceDialog
from test_tui_config import cell, open_config
from tui_helpers import wait_for


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_peek_names_columns_and_problems(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"body": "hello", "id": 1}])
    found = peek_source(str(tmp_path / "a.jsonl"))
    assert found.kind == "local" and found.columns == ["body", "id"] and not found.problem
    assert "its columns are body, id" in found.text_field_problem("text")
    assert found.text_field_problem("body") == ""
    (tmp_path / "b.csv").write_text("title,content\nx,y\n")
    assert peek_source(str(tmp_path / "b.csv")).columns == ["title", "content"]
    assert "mixes formats" in peek_source(str(tmp_path)).problem
    assert "no such file" in peek_source(str(tmp_path / "missing.txt")).problem
    assert peek_source("python-docs").kind == "embedded"
    assert peek_source("wikitext").kind == "hub"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "one.md").write_text("# hi")
    notes = peek_source(str(tmp_path / "notes"))
    assert notes.columns is None and "1 file(s)" in notes.summary


async def open_dialog(app, pilot):
    """The Config screen with the data-source dialog open on it; returns the Config screen."""
    screen = await open_config(app, pilot)
    await pilot.press("d")
    await wait_for(lambda: isinstance(app.screen, DataSourceDialog), pilot)
    return screen


def peek_text(app) -> str:
    return str(app.screen.query_one("#peek", Static).render())


async def test_picking_a_local_file_shows_its_columns_and_applies_the_text_field(tmp_path):
    data = tmp_path / "docs.jsonl"
    write_jsonl(data, [{"body": "some text", "id": 1}, {"body": "more", "id": 2}])
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_dialog(app, pilot)
        await wait_for(lambda: "embedded" in peek_text(app), pilot)  # the laptop preset's corpus
        app.screen.query_one("#source", Input).value = str(data)
        await wait_for(lambda: "columns: body, id" in peek_text(app), pilot)
        assert "no such column" in peek_text(app)  # text_field is still "text"
        await pilot.press("enter")  # refused: the dialog stays, the config is unchanged
        await pilot.pause()
        assert isinstance(app.screen, DataSourceDialog) and screen.config.data.source == "python-stdlib"
        app.screen.query_one("#text_field", Input).value = "body"
        await wait_for(lambda: "no such column" not in peek_text(app), pilot)
        app.screen.query_one("#text_field", Input).focus()
        await pilot.press("enter")
        await wait_for(lambda: app.screen is screen, pilot)
        assert screen.config.data.source == str(data) and screen.config.data.text_field == "body"
        assert cell(screen, "data.text_field") == "body"


async def test_choosing_an_embedded_corpus_from_the_list(tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_dialog(app, pilot)
        options = app.screen.query_one("OptionList")
        options.focus()
        options.highlighted = [o.id for o in options.options].index("python-docs")
        await pilot.press("enter")  # fills the source
        await wait_for(lambda: "language-reference topics" in peek_text(app), pilot)
        app.screen.query_one("#split", Input).focus()
        await pilot.press("enter")
        await wait_for(lambda: app.screen is screen, pilot)
        assert cell(screen, "data.source") == "python-docs"


async def test_a_missing_path_is_named_and_escape_changes_nothing(tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_dialog(app, pilot)
        app.screen.query_one("#source", Input).value = str(tmp_path / "nope.txt")
        await wait_for(lambda: "no such file or folder" in peek_text(app), pilot)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen, pilot)
        assert screen.config.data.source == "python-stdlib"
