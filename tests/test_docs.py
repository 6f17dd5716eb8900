"""The README's config reference is generated from the schema; they must not drift."""

from pathlib import Path

from engine.config.reference import reference_markdown


def test_readme_holds_the_current_config_reference():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "run `python -m engine.config.reference` and update README.md"


def test_every_package_folder_ships_in_the_wheel():
    """setup.py discovers packages; a code folder without __init__.py would be left out silently."""
    from setuptools import find_packages

    root = Path(__file__).resolve().parents[1]
    code_folders = {
        ".".join(p.parent.relative_to(root).parts)
        for top in ("engine", "lightlm_tui")
        for p in (root / top).rglob("*.py")
    }
    discovered = set(find_packages(str(root), include=["engine", "engine.*", "lightlm_tui", "lightlm_tui.*"]))
    assert code_folders == discovered, f"give {sorted(code_folders - discovered)} an __init__.py"
    assert "find_packages(include=[\"engine\", \"engine.*\", \"lightlm_tui\", \"lightlm_tui.*\"])" in (
        root / "setup.py").read_text()
