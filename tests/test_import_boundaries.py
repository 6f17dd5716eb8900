"""The engine never imports the UI toolkit; the UI never imports torch at import time.

Both checks walk whole packages (every module found on disk), so a new module is covered
the day it is added.
"""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Engine code the UI and the CLI import while they run: pure Python, no torch at import time.
# (engine.runs.checkpoint and engine.runs.trained_run load torch; the UI never imports them.)
TORCH_FREE_ENGINE_PACKAGES = ("engine.config", "engine.launch", "engine.cli")
TORCH_FREE_ENGINE_MODULES = ("engine.api", "engine.errors", "engine.model.estimates", "engine.model.attention_policy",
                             "engine.runs.run_dir", "engine.runs.events", "engine.runs.control_channel",
                             "engine.machine.paths", "engine.use.gguf_export")


def modules_of(package: str) -> list[str]:
    """`package` and every module under it, found by walking its folder."""
    path = ROOT.joinpath(*package.split("."))
    found = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
        if not info.name.endswith(".__main__"):  # importing it would start the program
            found.append(info.name)
    return sorted(found)


def modules_after_import(modules: list[str]) -> set[str]:
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            check=True, cwd=ROOT)
    return set(result.stdout.split())


def test_the_walk_finds_every_engine_module():
    on_disk = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
               for p in (ROOT / "engine").rglob("*.py") if p.name != "__main__.py"}
    assert on_disk == set(modules_of("engine"))


def test_engine_does_not_import_textual():
    loaded = modules_after_import(modules_of("engine"))
    assert "torch" in loaded  # the walk really imported the training code
    assert not any(m == "textual" or m.startswith("textual.") for m in loaded)


def test_ui_does_not_import_torch():
    ui = modules_of("lightlm_tui")
    loaded = modules_after_import(ui)
    assert "textual" in loaded
    assert "torch" not in loaded, "a lightlm_tui module imports torch at import time"


@pytest.mark.parametrize("package", TORCH_FREE_ENGINE_PACKAGES)
def test_engine_packages_the_ui_reads_do_not_import_torch(package):
    assert "torch" not in modules_after_import(modules_of(package))


def test_engine_modules_the_ui_reads_do_not_import_torch():
    assert "torch" not in modules_after_import(list(TORCH_FREE_ENGINE_MODULES))
