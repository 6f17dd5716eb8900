"""The README's config reference is generated from the schema; they must not drift."""

from pathlib import Path

from engine.config.reference import reference_markdown


def test_readme_holds_the_current_config_reference():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "run `python -m engine.config.reference` and update README.md"
