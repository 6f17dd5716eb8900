"""The docs' config reference is generated from the schema; they must not drift. Every page
the README links to exists."""

from pathlib import Path

from engine.config.reference import reference_markdown


ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_page_holds_the_current_config_reference():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert reference_markdown() in page, "run `python -m engine.config.reference` and update docs/configuration.md"


def test_every_local_link_in_the_readme_and_docs_leads_to_a_file():
    import re

    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert len(pages) > 10 and not broken, broken


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
