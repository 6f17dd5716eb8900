"""The engine never imports the UI toolkit; the UI and the config layer never import torch."""

import subprocess
import sys

import pytest


def modules_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement",
    ["import engine.model, engine.cli, engine.estimates, engine.hf_compat", "import engine.config"],
)
def test_engine_does_not_import_textual(statement):
    assert not any(m == "textual" or m.startswith("textual.") for m in modules_after_import(statement))


@pytest.mark.parametrize(
    "statement",
    ["import lightlm_tui, lightlm_tui.launcher, lightlm_tui.app, lightlm_tui.screens.hardware",
     "import lightlm_tui.screens.monitor, lightlm_tui.screens.config, lightlm_tui.screens.runs",
     "import engine.config, engine.estimates, engine.cli, engine.runner, engine.events",
     "import engine.control_channel, engine.run_dir, engine.detach"],
)
def test_ui_and_config_do_not_import_torch(statement):
    assert "torch" not in modules_after_import(statement)
