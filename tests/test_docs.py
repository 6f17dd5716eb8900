"""The README's config reference is generated from the schema; they must not drift."""

from pathlib import Path

from engine.config.reference import reference_markdown


def test_readme_holds_the_current_config_reference():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "run `python -m engine.config.reference` and update README.md"


def test_every_package_folder_ships_in_the_wheel():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(root).parts)
        for top in ("engine", "lightlm_tui")
        for p in (root / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"
